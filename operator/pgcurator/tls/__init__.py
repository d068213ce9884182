"""TLS certificates: validation of key pairs and the PostgreSQL SSLRequest handshake."""
