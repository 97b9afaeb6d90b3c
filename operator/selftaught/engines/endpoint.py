"""A `ChatEngine` over HTTP: any OpenAI-compatible chat endpoint (a served selftaught judge, vLLM,
a hosted model), through the `openai` client, which brings timeouts and bounded retries with
exponential backoff (connection errors, 408, 409, 429, 5xx). Requests go out a few at a time, so
a vLLM server batches them as the in-process engine would."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from selftaught.chat import Messages, Sample, Sampling
from selftaught.errors import EndpointUnavailable, InvalidInput

#: retries of one request after its first try (the client's backoff: 0.5 s doubling, at most 8 s)
RETRIES = 4
TIMEOUT_SECONDS = 600.0  # one judgment of a big model at full length
CONNECT_SECONDS = 5.0


class EndpointEngine:
    """`chat` against `url` (the base URL, e.g. http://127.0.0.1:8000/v1). `model` defaults to the
    one model the endpoint lists (a selftaught server lists exactly one: the run's name), or to
    its one LoRA adapter where vLLM lists it beside its base (a `train.lora` run's server)."""

    def __init__(
        self, url: str, model: str | None = None, *, api_key: str | None = None, concurrency: int = 16, retries: int = RETRIES, timeout: float = TIMEOUT_SECONDS
    ):
        import openai

        self.url, self.concurrency, self.retries = url.rstrip("/"), concurrency, retries
        # a hosted API's key as the openai client finds it; a local server needs none, the client insists on one
        self.client = openai.OpenAI(
            base_url=self.url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none", max_retries=retries, timeout=openai.Timeout(timeout, connect=CONNECT_SECONDS)
        )
        self._model = model

    @property
    def model(self) -> str:
        if self._model is None:
            listed = self._call(lambda: self.client.models.list().data, "list its models")
            models = [m.id for m in listed]
            adapters = [m.id for m in listed if getattr(m, "parent", None)]  # vLLM names an adapter's base as its parent
            if not models:
                raise InvalidInput(f"{self.url} serves no model")
            if len(models) > 1 and len(adapters) == 1:
                models = adapters
            if len(models) > 1:
                raise InvalidInput(f"{self.url} serves {len(models)} models ({', '.join(models)}): name one with --model")
            self._model = models[0]
        return self._model

    def chat(self, conversations: Sequence[Messages], sampling: Sampling, seeds: Sequence[int] | None = None) -> list[list[Sample]]:
        """`sampling.n` samples per conversation, in order; `seeds` go with their requests (vLLM
        honours a per-request seed; other servers may not)."""
        model = self.model

        def ask(index: int) -> list[Sample]:
            options = {} if seeds is None else {"seed": seeds[index]}
            response = self._call(
                lambda: self.client.chat.completions.create(
                    model=model,
                    messages=conversations[index],  # type: ignore[arg-type]
                    n=sampling.n,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    max_tokens=sampling.max_tokens,
                    **options,
                ),
                f"judge request {index}",
            )
            # usage counts the tokens of all n choices together
            tokens = (response.usage.completion_tokens // max(len(response.choices), 1)) if response.usage else 0
            choices = sorted(response.choices, key=lambda c: c.index)
            return [Sample(c.message.content or "", tokens, c.finish_reason == "length") for c in choices]

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(ask, range(len(conversations))))

    def _call(self, request, what: str):  # type: ignore[no-untyped-def]
        """`request()`, its failures said in words: a server that does not answer after the
        client's retries, or one that refuses the request."""
        import openai

        try:
            return request()
        except (openai.APIConnectionError, openai.APITimeoutError) as error:
            raise EndpointUnavailable(f"cannot reach the judge at {self.url} ({what}, {self.retries + 1} tries): {error}") from None
        except openai.NotFoundError as error:
            raise InvalidInput(f"{self.url}: not found ({what}): {_message(error)}; is it the base URL, ending in /v1, and the model's name right?") from None
        except openai.APIStatusError as error:
            if error.status_code >= 500 or error.status_code in (408, 409, 429):
                raise EndpointUnavailable(f"the judge at {self.url} answered {error.status_code} ({what}, {self.retries + 1} tries): {_message(error)}") from None
            raise InvalidInput(f"the judge at {self.url} refused {what} ({error.status_code}): {_message(error)}") from None


def _message(error) -> str:  # type: ignore[no-untyped-def]
    """The server's own sentence where it gave one (vLLM: {"message": ...} or {"error": {"message": ...}})."""
    body = error.body if isinstance(error.body, dict) else {}
    inner = body.get("error") if isinstance(body.get("error"), dict) else body
    return str(inner.get("message") or error.message)
