"""The ops dashboard: static files the API serves at /dashboard (no CDN, works offline)."""
