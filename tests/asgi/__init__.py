"""Tests of ``shakehands.asgi``: real uvicorn servers, real FastAPI and Starlette applications."""
