"""The smallest useful proxy in aiohttp (server and pooled client): read the body, parse
it as the gateway does, forward it, hand the answer back."""

import json
import sys

import aiohttp
from aiohttp import web

BACKEND = sys.argv[2]


async def client(app: web.Application):  # type: ignore[no-untyped-def]
    app["client"] = aiohttp.ClientSession()
    yield
    await app["client"].close()


async def chat(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    session: aiohttp.ClientSession = request.app["client"]
    async with session.post(f"{BACKEND}/v1/chat/completions", json=body) as answer:
        data = await answer.read()
        return web.Response(body=data, status=answer.status, content_type="application/json")


app = web.Application()
app.cleanup_ctx.append(client)
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
