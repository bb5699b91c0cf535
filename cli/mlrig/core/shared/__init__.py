"""The bottom layer every feature may use: values a user types (names, AWS inputs),
progress, interrupts, secrets, the local files' modes, the serving image's pure logic.
It imports no feature.
"""
