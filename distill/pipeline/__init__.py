"""The pipeline: the stage graph, the runner, and one module per stage (prompts, generate, verify, sft, train, eval, package)."""
