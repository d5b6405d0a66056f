"""The HTTP layer: routes, request/response mapping and the error -> HTTP mapping."""
