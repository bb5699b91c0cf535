"""The benchmark's BentoML service: the same scikit-learn pipeline, one-row JSON arrays."""

import bentoml
import numpy as np


@bentoml.service(workers=1)
class BreastCancer:
    model_ref = bentoml.models.BentoModel("bench-bc:latest")

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)

    @bentoml.api
    def predict(self, input: np.ndarray) -> np.ndarray:
        return self.model.predict(input)
