from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_PREFILL_NEW: _ClassVar[Phase]
    PHASE_PREFILL_CHUNK: _ClassVar[Phase]
    PHASE_DECODE: _ClassVar[Phase]
PHASE_UNSPECIFIED: Phase
PHASE_PREFILL_NEW: Phase
PHASE_PREFILL_CHUNK: Phase
PHASE_DECODE: Phase

class ModelArchitecture(_message.Message):
    __slots__ = ("model_type", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size", "weight_bits", "act_bits", "kv_bits", "tie_word_embeddings", "num_experts", "experts_per_token", "expert_intermediate_size", "shared_expert_intermediate_size", "num_dense_layers", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "local_attention", "local_window", "num_local_layers", "num_nope_layers", "expert_weight_bits", "gemm_dtype", "quant_method", "qkv_bias")
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_HEADS_FIELD_NUMBER: _ClassVar[int]
    NUM_KV_HEADS_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BITS_FIELD_NUMBER: _ClassVar[int]
    ACT_BITS_FIELD_NUMBER: _ClassVar[int]
    KV_BITS_FIELD_NUMBER: _ClassVar[int]
    TIE_WORD_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXPERTS_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPERT_INTERMEDIATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHARED_EXPERT_INTERMEDIATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_DENSE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    Q_LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    KV_LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    QK_NOPE_HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    QK_ROPE_HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    V_HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_WINDOW_FIELD_NUMBER: _ClassVar[int]
    NUM_LOCAL_LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_NOPE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    EXPERT_WEIGHT_BITS_FIELD_NUMBER: _ClassVar[int]
    GEMM_DTYPE_FIELD_NUMBER: _ClassVar[int]
    QUANT_METHOD_FIELD_NUMBER: _ClassVar[int]
    QKV_BIAS_FIELD_NUMBER: _ClassVar[int]
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    weight_bits: int
    act_bits: int
    kv_bits: int
    tie_word_embeddings: bool
    num_experts: int
    experts_per_token: int
    expert_intermediate_size: int
    shared_expert_intermediate_size: int
    num_dense_layers: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    local_attention: str
    local_window: int
    num_local_layers: int
    num_nope_layers: int
    expert_weight_bits: float
    gemm_dtype: str
    quant_method: str
    qkv_bias: bool
    def __init__(self, model_type: _Optional[str] = ..., hidden_size: _Optional[int] = ..., intermediate_size: _Optional[int] = ..., num_layers: _Optional[int] = ..., num_heads: _Optional[int] = ..., num_kv_heads: _Optional[int] = ..., head_dim: _Optional[int] = ..., vocab_size: _Optional[int] = ..., weight_bits: _Optional[int] = ..., act_bits: _Optional[int] = ..., kv_bits: _Optional[int] = ..., tie_word_embeddings: _Optional[bool] = ..., num_experts: _Optional[int] = ..., experts_per_token: _Optional[int] = ..., expert_intermediate_size: _Optional[int] = ..., shared_expert_intermediate_size: _Optional[int] = ..., num_dense_layers: _Optional[int] = ..., q_lora_rank: _Optional[int] = ..., kv_lora_rank: _Optional[int] = ..., qk_nope_head_dim: _Optional[int] = ..., qk_rope_head_dim: _Optional[int] = ..., v_head_dim: _Optional[int] = ..., local_attention: _Optional[str] = ..., local_window: _Optional[int] = ..., num_local_layers: _Optional[int] = ..., num_nope_layers: _Optional[int] = ..., expert_weight_bits: _Optional[float] = ..., gemm_dtype: _Optional[str] = ..., quant_method: _Optional[str] = ..., qkv_bias: _Optional[bool] = ...) -> None: ...

class EngineIdentity(_message.Message):
    __slots__ = ("engine_name", "engine_version", "instance_id", "model_name", "architecture", "gpu", "gpu_count", "tp", "pp", "dp", "dp_rank", "engine_clock_at_open_s", "wall_clock_at_open_s", "ep", "cumulative_acks")
    ENGINE_NAME_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    TP_FIELD_NUMBER: _ClassVar[int]
    PP_FIELD_NUMBER: _ClassVar[int]
    DP_FIELD_NUMBER: _ClassVar[int]
    DP_RANK_FIELD_NUMBER: _ClassVar[int]
    ENGINE_CLOCK_AT_OPEN_S_FIELD_NUMBER: _ClassVar[int]
    WALL_CLOCK_AT_OPEN_S_FIELD_NUMBER: _ClassVar[int]
    EP_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_ACKS_FIELD_NUMBER: _ClassVar[int]
    engine_name: str
    engine_version: str
    instance_id: str
    model_name: str
    architecture: ModelArchitecture
    gpu: str
    gpu_count: int
    tp: int
    pp: int
    dp: int
    dp_rank: int
    engine_clock_at_open_s: float
    wall_clock_at_open_s: float
    ep: int
    cumulative_acks: bool
    def __init__(self, engine_name: _Optional[str] = ..., engine_version: _Optional[str] = ..., instance_id: _Optional[str] = ..., model_name: _Optional[str] = ..., architecture: _Optional[_Union[ModelArchitecture, _Mapping]] = ..., gpu: _Optional[str] = ..., gpu_count: _Optional[int] = ..., tp: _Optional[int] = ..., pp: _Optional[int] = ..., dp: _Optional[int] = ..., dp_rank: _Optional[int] = ..., engine_clock_at_open_s: _Optional[float] = ..., wall_clock_at_open_s: _Optional[float] = ..., ep: _Optional[int] = ..., cumulative_acks: _Optional[bool] = ...) -> None: ...

class StepColumns(_message.Message):
    __slots__ = ("step_id", "start_s", "end_s", "slice_count", "request_id", "phase", "new_tokens", "context_tokens", "prompt_tokens")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    SLICE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    step_id: _containers.RepeatedScalarFieldContainer[int]
    start_s: _containers.RepeatedScalarFieldContainer[float]
    end_s: _containers.RepeatedScalarFieldContainer[float]
    slice_count: _containers.RepeatedScalarFieldContainer[int]
    request_id: _containers.RepeatedScalarFieldContainer[str]
    phase: _containers.RepeatedScalarFieldContainer[Phase]
    new_tokens: _containers.RepeatedScalarFieldContainer[int]
    context_tokens: _containers.RepeatedScalarFieldContainer[int]
    prompt_tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, step_id: _Optional[_Iterable[int]] = ..., start_s: _Optional[_Iterable[float]] = ..., end_s: _Optional[_Iterable[float]] = ..., slice_count: _Optional[_Iterable[int]] = ..., request_id: _Optional[_Iterable[str]] = ..., phase: _Optional[_Iterable[_Union[Phase, str]]] = ..., new_tokens: _Optional[_Iterable[int]] = ..., context_tokens: _Optional[_Iterable[int]] = ..., prompt_tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class RequestDone(_message.Message):
    __slots__ = ("request_id", "aborted", "output_tokens", "prompt_tokens", "time_s", "client_request_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    aborted: bool
    output_tokens: int
    prompt_tokens: int
    time_s: float
    client_request_id: str
    def __init__(self, request_id: _Optional[str] = ..., aborted: _Optional[bool] = ..., output_tokens: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., time_s: _Optional[float] = ..., client_request_id: _Optional[str] = ...) -> None: ...

class StaticBatch(_message.Message):
    __slots__ = ("batch_id", "start_s", "end_s", "request_id", "prompt_tokens", "output_tokens")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    start_s: float
    end_s: float
    request_id: _containers.RepeatedScalarFieldContainer[str]
    prompt_tokens: _containers.RepeatedScalarFieldContainer[int]
    output_tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, batch_id: _Optional[int] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., request_id: _Optional[_Iterable[str]] = ..., prompt_tokens: _Optional[_Iterable[int]] = ..., output_tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("seq", "steps", "done", "static_batches")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    STATIC_BATCHES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    steps: StepColumns
    done: _containers.RepeatedCompositeFieldContainer[RequestDone]
    static_batches: _containers.RepeatedCompositeFieldContainer[StaticBatch]
    def __init__(self, seq: _Optional[int] = ..., steps: _Optional[_Union[StepColumns, _Mapping]] = ..., done: _Optional[_Iterable[_Union[RequestDone, _Mapping]]] = ..., static_batches: _Optional[_Iterable[_Union[StaticBatch, _Mapping]]] = ...) -> None: ...

class EngineMessage(_message.Message):
    __slots__ = ("identity", "events")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    identity: EngineIdentity
    events: EventBatch
    def __init__(self, identity: _Optional[_Union[EngineIdentity, _Mapping]] = ..., events: _Optional[_Union[EventBatch, _Mapping]] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("kind", "id", "request_id", "field", "reason")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Rejection.Kind]
        KIND_STEP: _ClassVar[Rejection.Kind]
        KIND_DONE: _ClassVar[Rejection.Kind]
        KIND_STATIC_BATCH: _ClassVar[Rejection.Kind]
    KIND_UNSPECIFIED: Rejection.Kind
    KIND_STEP: Rejection.Kind
    KIND_DONE: Rejection.Kind
    KIND_STATIC_BATCH: Rejection.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    kind: Rejection.Kind
    id: int
    request_id: str
    field: str
    reason: str
    def __init__(self, kind: _Optional[_Union[Rejection.Kind, str]] = ..., id: _Optional[int] = ..., request_id: _Optional[str] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq", "stream_id", "steps_accepted", "steps_rejected", "done_accepted", "done_rejected", "batches_accepted", "batches_rejected", "flagged", "rejections", "acked_through_seq")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    STEPS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    DONE_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DONE_REJECTED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_REJECTED_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    ACKED_THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    stream_id: str
    steps_accepted: int
    steps_rejected: int
    done_accepted: int
    done_rejected: int
    batches_accepted: int
    batches_rejected: int
    flagged: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    acked_through_seq: int
    def __init__(self, seq: _Optional[int] = ..., stream_id: _Optional[str] = ..., steps_accepted: _Optional[int] = ..., steps_rejected: _Optional[int] = ..., done_accepted: _Optional[int] = ..., done_rejected: _Optional[int] = ..., batches_accepted: _Optional[int] = ..., batches_rejected: _Optional[int] = ..., flagged: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ..., acked_through_seq: _Optional[int] = ...) -> None: ...
