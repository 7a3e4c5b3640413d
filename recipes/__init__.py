"""YAML recipes the ``embodyhub`` CLI runs, installed as ``embodyhub.recipes``."""
