"""Examples a user can copy: factories for lambda-sweep's ``model.factory`` and ``data.factory`` keys."""
