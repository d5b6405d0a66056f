"""One module per endpoint group: predict, model, health, admin."""
