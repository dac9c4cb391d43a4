"""The floor: the cheapest possible order-sign endpoint on the service's own server stack.

FastAPI + uvicorn with the service's settings (one process, no access log); the route reads the
whole body, parses it as JSON with the same parser the service uses (orjson) and answers
{"cards": []}. Whatever the service costs above this is the cost of the CDS logic itself.
"""

from __future__ import annotations

import argparse
import gc

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI(title="ivig-cds benchmark floor")
EMPTY = orjson.dumps({"cards": []})
# the service's young generation (cds_service.app.YOUNG_COLLECTION_THRESHOLD): decoding a large
# body costs the floor fewer collections too, so the ratio compares the same process tuning
YOUNG_COLLECTION_THRESHOLD = 100_000


@app.post("/cds-services/{service_id}")
async def call_service(service_id: str, request: Request) -> Response:
    body = await request.body()
    orjson.loads(body)
    return Response(EMPTY, media_type="application/json")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    gc.collect()
    gc.freeze()  # as `ivig-cds serve` does: no start-up objects in full collections
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
