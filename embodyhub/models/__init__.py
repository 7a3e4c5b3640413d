"""Model families; each follows the transformers single-model-file conventions."""
