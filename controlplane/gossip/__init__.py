"""SWIM membership with Lifeguard (sans-IO core), its transport and NetworkDB."""
