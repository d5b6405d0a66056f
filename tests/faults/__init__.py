"""The fault module: the gateway under killed, frozen and slow dependencies, SIGTERM and slow clients."""
