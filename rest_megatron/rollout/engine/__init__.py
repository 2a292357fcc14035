"""The embedded CPU inference engine: a Hugging Face model behind SGLang's `/generate` protocol.

`core.EngineCore` runs the model (continuous batching, prefix cache) on a worker thread,
`app.create_app` serves it over HTTP, and `rest_megatron.rollout.embedded_server` is the command.
"""
