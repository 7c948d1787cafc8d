"""A stand-in backend for bench/frameworks.py: answers every chat completion at once with
the same small body, so the bench measures the proxies, not a model."""

import sys

from aiohttp import web

BODY = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"smollm2",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},'
    b'"finish_reason":"length"}],"usage":{"prompt_tokens":9,"completion_tokens":1,'
    b'"total_tokens":10}}'
)


async def chat(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="application/json")


app = web.Application()
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
