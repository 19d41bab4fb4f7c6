"""Baseline: a raw ASGI app on uvicorn doing the runtime's work inline (parse JSON, predict, dump JSON).

    python raw_asgi.py APP_DIR PORT

No framework, no routing, no access log (uvicorn's is off): the ceiling the runtime is measured
against.
"""

import json
import os
import sys

import uvicorn


def build(app_dir: str):
    app_dir = os.path.abspath(app_dir)
    sys.path.insert(0, app_dir)
    os.chdir(app_dir)
    from model import Model  # the same user class the runtime serves

    model = Model()
    model.load()
    predict = model.predict
    headers_type = (b"content-type", b"application/json")

    async def app(scope, receive, send):
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        out = json.dumps({"output": predict(json.loads(body)["input"])}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [headers_type, (b"content-length", b"%d" % len(out))]})
        await send({"type": "http.response.body", "body": out})

    return app


if __name__ == "__main__":
    uvicorn.run(build(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", http="httptools",
                lifespan="off", access_log=False, log_level="warning")
