"""The serving engine (nano-vllm's split): Sequence, Scheduler, ModelRunner, Engine, plus the
LLM convenience front, speculative decoding, serving metrics and synthetic traces.

Batch metadata (block tables, slot mappings) flows as arguments: scheduler -> runner -> cache ->
model; nothing here is a module global."""
from .config import EngineConfig
from .engine import Engine
from .llm import LLM
from .metrics import RequestMetrics, summarize
from .model_runner import ModelRunner
from .scheduler import ScheduledBatch, Scheduler
from .outputs import CompletionOutput, Logprob, RequestOutput
from .sequence import Sequence, SequenceStatus

__all__ = ["CompletionOutput", "Engine", "EngineConfig", "LLM", "Logprob", "ModelRunner", "RequestMetrics",
           "RequestOutput", "ScheduledBatch", "Scheduler", "Sequence", "SequenceStatus", "summarize"]
