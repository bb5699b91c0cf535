"""The local stack: processes, files and configuration under the stack's directory."""
