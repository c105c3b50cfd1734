from google.protobuf import struct_pb2 as _struct_pb2
from . import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EstimateRequest(_message.Message):
    __slots__ = ("model", "gpu", "batch", "prompt_len", "output_len", "tp", "pp", "pue", "carbon_intensity_g_per_kwh", "observed_latency_s", "ep", "dp")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    PROMPT_LEN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_LEN_FIELD_NUMBER: _ClassVar[int]
    TP_FIELD_NUMBER: _ClassVar[int]
    PP_FIELD_NUMBER: _ClassVar[int]
    PUE_FIELD_NUMBER: _ClassVar[int]
    CARBON_INTENSITY_G_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    EP_FIELD_NUMBER: _ClassVar[int]
    DP_FIELD_NUMBER: _ClassVar[int]
    model: str
    gpu: str
    batch: int
    prompt_len: int
    output_len: int
    tp: int
    pp: int
    pue: float
    carbon_intensity_g_per_kwh: float
    observed_latency_s: float
    ep: int
    dp: int
    def __init__(self, model: _Optional[str] = ..., gpu: _Optional[str] = ..., batch: _Optional[int] = ..., prompt_len: _Optional[int] = ..., output_len: _Optional[int] = ..., tp: _Optional[int] = ..., pp: _Optional[int] = ..., pue: _Optional[float] = ..., carbon_intensity_g_per_kwh: _Optional[float] = ..., observed_latency_s: _Optional[float] = ..., ep: _Optional[int] = ..., dp: _Optional[int] = ...) -> None: ...

class EstimateResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _struct_pb2.Struct
    def __init__(self, result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class EnergyBreakdown(_message.Message):
    __slots__ = ("prefill", "decode", "serving", "total")
    PREFILL_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    prefill: float
    decode: float
    serving: float
    total: float
    def __init__(self, prefill: _Optional[float] = ..., decode: _Optional[float] = ..., serving: _Optional[float] = ..., total: _Optional[float] = ...) -> None: ...

class CarbonBreakdown(_message.Message):
    __slots__ = ("operational", "embodied", "total")
    OPERATIONAL_FIELD_NUMBER: _ClassVar[int]
    EMBODIED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    operational: float
    embodied: float
    total: float
    def __init__(self, operational: _Optional[float] = ..., embodied: _Optional[float] = ..., total: _Optional[float] = ...) -> None: ...

class RequestCarbon(_message.Message):
    __slots__ = ("request_id", "state", "ts", "model", "gpu", "prompt_tokens", "output_tokens", "energy_j", "carbon_g", "source", "pue", "carbon_intensity_g_per_kwh", "engine", "steps", "client_request_id", "carbon_intensity_kind", "carbon_intensity_source", "carbon_intensity_ts", "sci_g_per_1k_output_tokens", "error", "expected_error_pct")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[RequestCarbon.State]
        STATE_RUNNING: _ClassVar[RequestCarbon.State]
        STATE_FINISHED: _ClassVar[RequestCarbon.State]
        STATE_ABORTED: _ClassVar[RequestCarbon.State]
    STATE_UNSPECIFIED: RequestCarbon.State
    STATE_RUNNING: RequestCarbon.State
    STATE_FINISHED: RequestCarbon.State
    STATE_ABORTED: RequestCarbon.State
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    CARBON_G_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PUE_FIELD_NUMBER: _ClassVar[int]
    CARBON_INTENSITY_G_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CARBON_INTENSITY_KIND_FIELD_NUMBER: _ClassVar[int]
    CARBON_INTENSITY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    CARBON_INTENSITY_TS_FIELD_NUMBER: _ClassVar[int]
    SCI_G_PER_1K_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ERROR_PCT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    state: RequestCarbon.State
    ts: float
    model: str
    gpu: str
    prompt_tokens: int
    output_tokens: int
    energy_j: EnergyBreakdown
    carbon_g: CarbonBreakdown
    source: str
    pue: float
    carbon_intensity_g_per_kwh: float
    engine: str
    steps: int
    client_request_id: str
    carbon_intensity_kind: str
    carbon_intensity_source: str
    carbon_intensity_ts: float
    sci_g_per_1k_output_tokens: float
    error: str
    expected_error_pct: float
    def __init__(self, request_id: _Optional[str] = ..., state: _Optional[_Union[RequestCarbon.State, str]] = ..., ts: _Optional[float] = ..., model: _Optional[str] = ..., gpu: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., energy_j: _Optional[_Union[EnergyBreakdown, _Mapping]] = ..., carbon_g: _Optional[_Union[CarbonBreakdown, _Mapping]] = ..., source: _Optional[str] = ..., pue: _Optional[float] = ..., carbon_intensity_g_per_kwh: _Optional[float] = ..., engine: _Optional[str] = ..., steps: _Optional[int] = ..., client_request_id: _Optional[str] = ..., carbon_intensity_kind: _Optional[str] = ..., carbon_intensity_source: _Optional[str] = ..., carbon_intensity_ts: _Optional[float] = ..., sci_g_per_1k_output_tokens: _Optional[float] = ..., error: _Optional[str] = ..., expected_error_pct: _Optional[float] = ...) -> None: ...

class RequestCarbonQuery(_message.Message):
    __slots__ = ("request_id", "wait_s", "prefix")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    wait_s: float
    prefix: bool
    def __init__(self, request_id: _Optional[str] = ..., wait_s: _Optional[float] = ..., prefix: _Optional[bool] = ...) -> None: ...

class RequestCarbonReply(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[RequestCarbon]
    def __init__(self, records: _Optional[_Iterable[_Union[RequestCarbon, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("request_id_prefix",)
    REQUEST_ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    request_id_prefix: str
    def __init__(self, request_id_prefix: _Optional[str] = ...) -> None: ...
