"""The gateway: one OpenAI- and Ollama-compatible endpoint over every backend."""
