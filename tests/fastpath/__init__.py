"""Tests of shakehands.asyncio._fastpath and shakehands._fastpath (C)."""
