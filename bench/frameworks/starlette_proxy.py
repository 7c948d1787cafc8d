"""The same proxy in Starlette on uvicorn (uvloop and httptools when installed) with an
httpx client."""

import json
import sys

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BACKEND = sys.argv[2]
client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=100))


async def chat(request: Request) -> Response:
    body = json.loads(await request.body())
    answer = await client.post(f"{BACKEND}/v1/chat/completions", json=body)
    return Response(answer.content, status_code=answer.status_code, media_type="application/json")


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
