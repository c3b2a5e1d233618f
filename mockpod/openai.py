"""OpenAI-shaped request parsing and response bodies, as vLLM's server writes them.

Only what a router or a load generator looks at is modelled: the model name, token counts,
``max_tokens``/``n``, choices and usage. Text is filler; tokens are estimated at four
characters each, since the mock has no tokenizer.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mockpod.spec import PodSpec
from mockpod.state import Generation

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "ApiError",
    "CompletionRequest",
    "completion_body",
    "error_body",
    "estimate_tokens",
    "models_body",
    "parse_completion",
]

# OpenAI's default for completions; used for chat too, so an unbounded request stays short.
DEFAULT_MAX_TOKENS = 16
_WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog")


class ApiError(Exception):
    """An error answered with an OpenAI-style body."""

    def __init__(self, status: int, message: str, err_type: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.err_type, self.param)


def error_body(
    status: int, message: str, err_type: str, param: str | None = None
) -> dict[str, Any]:
    """``{"error": {...}}`` as the OpenAI API (and recent vLLM) answer."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": status}}


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "BadRequestError", param)


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    prompt_tokens: int
    max_tokens: int
    n: int
    chat: bool


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _prompt_tokens(prompt: object) -> int:
    if isinstance(prompt, str):
        return estimate_tokens(prompt)
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) for p in prompt):
            return len(prompt)
        if all(isinstance(p, str) for p in prompt):
            return sum(estimate_tokens(p) for p in prompt)
        if all(isinstance(p, list) for p in prompt):
            return sum(len(p) for p in prompt)
    raise bad_request("prompt must be a string, a list of strings or a list of token ids", "prompt")


def _message_tokens(messages: object) -> int:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list", "messages")
    total = 0
    for message in messages:
        if not isinstance(message, Mapping):
            raise bad_request("each message must be an object", "messages")
        content = message.get("content")
        if isinstance(content, str):
            total += estimate_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    total += estimate_tokens(part["text"])
        total += 4  # the chat template's role markers
    return total


def _positive_int(body: Mapping[str, Any], key: str, default: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad_request(f"{key} must be a positive integer", key)
    return value


def parse_completion(body: object, *, chat: bool) -> CompletionRequest:
    """Validate a ``/v1/completions`` or ``/v1/chat/completions`` body."""
    if not isinstance(body, Mapping):
        raise bad_request("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required", "model")
    if body.get("stream"):
        raise bad_request("the mock pod does not stream; send stream=false", "stream")
    if chat:
        prompt_tokens = _message_tokens(body.get("messages"))
        max_tokens = _positive_int(body, "max_completion_tokens", 0) or _positive_int(
            body, "max_tokens", DEFAULT_MAX_TOKENS
        )
    else:
        prompt_tokens = _prompt_tokens(body.get("prompt"))
        max_tokens = _positive_int(body, "max_tokens", DEFAULT_MAX_TOKENS)
    n = _positive_int(body, "n", 1)
    return CompletionRequest(model, prompt_tokens, max_tokens, n, chat)


def _filler(tokens: int) -> str:
    return " ".join(itertools.islice(itertools.cycle(_WORDS), tokens))


def completion_body(request: CompletionRequest, result: Generation) -> dict[str, Any]:
    """The response for a finished request, with usage from the simulation."""
    created = int(time.time())
    per_choice = result.completion_tokens // request.n
    text = _filler(per_choice)
    usage = {
        "prompt_tokens": result.prompt_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
        "completion_tokens": result.completion_tokens,
    }
    if request.chat:
        chat_choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": result.finish_reason,
                "stop_reason": None,
            }
            for i in range(request.n)
        ]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": created,
            "model": request.model,
            "choices": chat_choices,
            "usage": usage,
        }
    choices = [
        {
            "index": i,
            "text": text,
            "logprobs": None,
            "finish_reason": result.finish_reason,
            "stop_reason": None,
        }
        for i in range(request.n)
    ]
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": created,
        "model": request.model,
        "choices": choices,
        "usage": usage,
    }


def models_body(spec: PodSpec, created: int) -> dict[str, Any]:
    """``/v1/models``: the base model, then one entry per adapter whose parent is the base."""

    def card(model_id: str, parent: str | None) -> dict[str, Any]:
        return {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": spec.model if parent is None else model_id,
            "parent": parent,
            "max_model_len": spec.max_model_len,
            "permission": [],
        }

    data = [card(spec.model, None)] + [card(lora, spec.model) for lora in spec.loras]
    return {"object": "list", "data": data}
