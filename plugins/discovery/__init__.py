"""Discovery: what finds the endpoints and keeps the store's set of them current."""
