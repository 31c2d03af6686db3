"""Teacher backends: where traces come from (vLLM engines in Ray actors, or an OpenAI-compatible endpoint)."""
