"""The live studio (`python -m fc_jax.serve`, console script `fc-jax-serve`): a web page where a person picks a
garment and the streaming video switches to it, live.

Modules: `__main__` (flags, loading the model as `fc_jax.generate` does, warming the sessions, serving),
`app` (the aiohttp routes and the stream WebSocket), `stream` (the generation thread of one stream), `model`
(the loaded model, prompts, the session pool), `gallery` (built-in tiny-world people and garments, the garment
colour of generated frames), `uploads` (checked uploads in the server's temporary folder), `client` (a
WebSocket client of the studio and a launcher of the server, for the benchmark and the tests), `static/` (the
page: plain HTML, CSS and JS).
"""
