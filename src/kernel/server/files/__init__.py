"""Files: pushed from the server to many servers, fetched from one (docs/files.md)."""
