"""Manager-side services: client access to the store (more loops join in later issues)."""
