"""Jinja model-card templates (base model, robot adapter, Thor export), installed as ``embodyhub.model_cards``;
``embodyhub.hub.cards`` renders them."""
