from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProtocolVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_VERSION_UNSPECIFIED: _ClassVar[ProtocolVersion]
    PROTOCOL_VERSION_CURRENT: _ClassVar[ProtocolVersion]

class MemberState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMBER_STATE_UNSPECIFIED: _ClassVar[MemberState]
    MEMBER_STATE_ALIVE: _ClassVar[MemberState]
    MEMBER_STATE_SUSPECT: _ClassVar[MemberState]
    MEMBER_STATE_DEAD: _ClassVar[MemberState]
    MEMBER_STATE_LEFT: _ClassVar[MemberState]

class TaskOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_OUTCOME_UNSPECIFIED: _ClassVar[TaskOutcome]
    TASK_OUTCOME_SUCCEEDED: _ClassVar[TaskOutcome]
    TASK_OUTCOME_FAILED: _ClassVar[TaskOutcome]
    TASK_OUTCOME_CANCELLED: _ClassVar[TaskOutcome]
PROTOCOL_VERSION_UNSPECIFIED: ProtocolVersion
PROTOCOL_VERSION_CURRENT: ProtocolVersion
MEMBER_STATE_UNSPECIFIED: MemberState
MEMBER_STATE_ALIVE: MemberState
MEMBER_STATE_SUSPECT: MemberState
MEMBER_STATE_DEAD: MemberState
MEMBER_STATE_LEFT: MemberState
TASK_OUTCOME_UNSPECIFIED: TaskOutcome
TASK_OUTCOME_SUCCEEDED: TaskOutcome
TASK_OUTCOME_FAILED: TaskOutcome
TASK_OUTCOME_CANCELLED: TaskOutcome

class Hello(_message.Message):
    __slots__ = ("protocol_version", "node_id", "node_name", "incarnation", "address", "client")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    node_id: str
    node_name: str
    incarnation: int
    address: str
    client: bool
    def __init__(self, protocol_version: _Optional[int] = ..., node_id: _Optional[str] = ..., node_name: _Optional[str] = ..., incarnation: _Optional[int] = ..., address: _Optional[str] = ..., client: _Optional[bool] = ...) -> None: ...

class MembershipMessage(_message.Message):
    __slots__ = ("hello", "pings", "ping_reqs", "acks", "nacks", "state_sync", "gossip", "wake_topics")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    PINGS_FIELD_NUMBER: _ClassVar[int]
    PING_REQS_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    NACKS_FIELD_NUMBER: _ClassVar[int]
    STATE_SYNC_FIELD_NUMBER: _ClassVar[int]
    GOSSIP_FIELD_NUMBER: _ClassVar[int]
    WAKE_TOPICS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    pings: _containers.RepeatedCompositeFieldContainer[Ping]
    ping_reqs: _containers.RepeatedCompositeFieldContainer[PingReq]
    acks: _containers.RepeatedCompositeFieldContainer[Ack]
    nacks: _containers.RepeatedCompositeFieldContainer[Nack]
    state_sync: StateSync
    gossip: _containers.RepeatedCompositeFieldContainer[Gossip]
    wake_topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., pings: _Optional[_Iterable[_Union[Ping, _Mapping]]] = ..., ping_reqs: _Optional[_Iterable[_Union[PingReq, _Mapping]]] = ..., acks: _Optional[_Iterable[_Union[Ack, _Mapping]]] = ..., nacks: _Optional[_Iterable[_Union[Nack, _Mapping]]] = ..., state_sync: _Optional[_Union[StateSync, _Mapping]] = ..., gossip: _Optional[_Iterable[_Union[Gossip, _Mapping]]] = ..., wake_topics: _Optional[_Iterable[str]] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("seq", "target_id")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    target_id: str
    def __init__(self, seq: _Optional[int] = ..., target_id: _Optional[str] = ...) -> None: ...

class PingReq(_message.Message):
    __slots__ = ("seq", "target_id", "target_address")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    target_id: str
    target_address: str
    def __init__(self, seq: _Optional[int] = ..., target_id: _Optional[str] = ..., target_address: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq", "node_id", "incarnation", "wall_time")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_FIELD_NUMBER: _ClassVar[int]
    seq: int
    node_id: str
    incarnation: int
    wall_time: float
    def __init__(self, seq: _Optional[int] = ..., node_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., wall_time: _Optional[float] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class Gossip(_message.Message):
    __slots__ = ("node_id", "incarnation", "state", "address", "node_name", "record_seq", "record", "origin_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    RECORD_SEQ_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    incarnation: int
    state: MemberState
    address: str
    node_name: str
    record_seq: int
    record: bytes
    origin_id: str
    def __init__(self, node_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., state: _Optional[_Union[MemberState, str]] = ..., address: _Optional[str] = ..., node_name: _Optional[str] = ..., record_seq: _Optional[int] = ..., record: _Optional[bytes] = ..., origin_id: _Optional[str] = ...) -> None: ...

class StateSync(_message.Message):
    __slots__ = ("join", "reply_wanted", "members", "wall_time")
    JOIN_FIELD_NUMBER: _ClassVar[int]
    REPLY_WANTED_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_FIELD_NUMBER: _ClassVar[int]
    join: bool
    reply_wanted: bool
    members: _containers.RepeatedCompositeFieldContainer[Gossip]
    wall_time: float
    def __init__(self, join: _Optional[bool] = ..., reply_wanted: _Optional[bool] = ..., members: _Optional[_Iterable[_Union[Gossip, _Mapping]]] = ..., wall_time: _Optional[float] = ...) -> None: ...

class TaskMessage(_message.Message):
    __slots__ = ("hello", "offers", "accepts", "renewals", "renewed", "results", "result_acks", "cancels", "backups", "backup_acks", "handovers", "submits", "submit_results", "finished", "moves", "move_results", "finished_acks", "released")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_FIELD_NUMBER: _ClassVar[int]
    RENEWALS_FIELD_NUMBER: _ClassVar[int]
    RENEWED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACKS_FIELD_NUMBER: _ClassVar[int]
    CANCELS_FIELD_NUMBER: _ClassVar[int]
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ACKS_FIELD_NUMBER: _ClassVar[int]
    HANDOVERS_FIELD_NUMBER: _ClassVar[int]
    SUBMITS_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_RESULTS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    MOVES_FIELD_NUMBER: _ClassVar[int]
    MOVE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_ACKS_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    offers: _containers.RepeatedCompositeFieldContainer[TaskOffer]
    accepts: _containers.RepeatedCompositeFieldContainer[TaskAccept]
    renewals: _containers.RepeatedCompositeFieldContainer[LeaseRenewal]
    renewed: _containers.RepeatedCompositeFieldContainer[LeaseRenewed]
    results: _containers.RepeatedCompositeFieldContainer[TaskResult]
    result_acks: _containers.RepeatedCompositeFieldContainer[ResultAck]
    cancels: _containers.RepeatedCompositeFieldContainer[CancelAttempt]
    backups: _containers.RepeatedCompositeFieldContainer[BackupRecord]
    backup_acks: _containers.RepeatedCompositeFieldContainer[BackupAck]
    handovers: _containers.RepeatedCompositeFieldContainer[Handover]
    submits: _containers.RepeatedCompositeFieldContainer[Submission]
    submit_results: _containers.RepeatedCompositeFieldContainer[SubmissionResult]
    finished: _containers.RepeatedCompositeFieldContainer[FinishedTask]
    moves: _containers.RepeatedCompositeFieldContainer[MoveRequest]
    move_results: _containers.RepeatedCompositeFieldContainer[MoveResult]
    finished_acks: _containers.RepeatedCompositeFieldContainer[FinishedAck]
    released: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., offers: _Optional[_Iterable[_Union[TaskOffer, _Mapping]]] = ..., accepts: _Optional[_Iterable[_Union[TaskAccept, _Mapping]]] = ..., renewals: _Optional[_Iterable[_Union[LeaseRenewal, _Mapping]]] = ..., renewed: _Optional[_Iterable[_Union[LeaseRenewed, _Mapping]]] = ..., results: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ..., result_acks: _Optional[_Iterable[_Union[ResultAck, _Mapping]]] = ..., cancels: _Optional[_Iterable[_Union[CancelAttempt, _Mapping]]] = ..., backups: _Optional[_Iterable[_Union[BackupRecord, _Mapping]]] = ..., backup_acks: _Optional[_Iterable[_Union[BackupAck, _Mapping]]] = ..., handovers: _Optional[_Iterable[_Union[Handover, _Mapping]]] = ..., submits: _Optional[_Iterable[_Union[Submission, _Mapping]]] = ..., submit_results: _Optional[_Iterable[_Union[SubmissionResult, _Mapping]]] = ..., finished: _Optional[_Iterable[_Union[FinishedTask, _Mapping]]] = ..., moves: _Optional[_Iterable[_Union[MoveRequest, _Mapping]]] = ..., move_results: _Optional[_Iterable[_Union[MoveResult, _Mapping]]] = ..., finished_acks: _Optional[_Iterable[_Union[FinishedAck, _Mapping]]] = ..., released: _Optional[_Iterable[str]] = ...) -> None: ...

class FinishedAck(_message.Message):
    __slots__ = ("task_id", "refused")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    refused: bool
    def __init__(self, task_id: _Optional[str] = ..., refused: _Optional[bool] = ...) -> None: ...

class MoveRequest(_message.Message):
    __slots__ = ("request_id", "move")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MOVE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    move: bytes
    def __init__(self, request_id: _Optional[int] = ..., move: _Optional[bytes] = ...) -> None: ...

class MoveResult(_message.Message):
    __slots__ = ("request_id", "applied")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    applied: bool
    def __init__(self, request_id: _Optional[int] = ..., applied: _Optional[bool] = ...) -> None: ...

class Submission(_message.Message):
    __slots__ = ("request_id", "task", "node_id", "node_name", "why", "capacity", "delay_seconds", "adopt", "previous_owner_id", "awaited")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ADOPT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    AWAITED_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    task: bytes
    node_id: str
    node_name: str
    why: str
    capacity: int
    delay_seconds: float
    adopt: bool
    previous_owner_id: str
    awaited: bool
    def __init__(self, request_id: _Optional[int] = ..., task: _Optional[bytes] = ..., node_id: _Optional[str] = ..., node_name: _Optional[str] = ..., why: _Optional[str] = ..., capacity: _Optional[int] = ..., delay_seconds: _Optional[float] = ..., adopt: _Optional[bool] = ..., previous_owner_id: _Optional[str] = ..., awaited: _Optional[bool] = ...) -> None: ...

class SubmissionResult(_message.Message):
    __slots__ = ("request_id", "outcome", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    outcome: int
    error: str
    def __init__(self, request_id: _Optional[int] = ..., outcome: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class FinishedTask(_message.Message):
    __slots__ = ("entry", "owner_id", "ack")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    entry: bytes
    owner_id: str
    ack: bool
    def __init__(self, entry: _Optional[bytes] = ..., owner_id: _Optional[str] = ..., ack: _Optional[bool] = ...) -> None: ...

class TaskOffer(_message.Message):
    __slots__ = ("task_id", "attempt", "owner_epoch", "lease_seconds", "task", "delay_seconds")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OWNER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    owner_epoch: int
    lease_seconds: float
    task: bytes
    delay_seconds: float
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., owner_epoch: _Optional[int] = ..., lease_seconds: _Optional[float] = ..., task: _Optional[bytes] = ..., delay_seconds: _Optional[float] = ...) -> None: ...

class TaskAccept(_message.Message):
    __slots__ = ("task_id", "attempt", "accepted", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    accepted: bool
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class HeldAttempt(_message.Message):
    __slots__ = ("task_id", "attempt", "progress", "progress_message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    progress: float
    progress_message: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., progress: _Optional[float] = ..., progress_message: _Optional[str] = ...) -> None: ...

class LeaseRenewal(_message.Message):
    __slots__ = ("request_id", "held", "lease_seconds")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    held: _containers.RepeatedCompositeFieldContainer[HeldAttempt]
    lease_seconds: float
    def __init__(self, request_id: _Optional[int] = ..., held: _Optional[_Iterable[_Union[HeldAttempt, _Mapping]]] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class LeaseRenewed(_message.Message):
    __slots__ = ("request_id", "task_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[int] = ..., task_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "attempt", "owner_epoch", "outcome", "result", "error", "run_seconds")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OWNER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RUN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    owner_epoch: int
    outcome: TaskOutcome
    result: bytes
    error: str
    run_seconds: float
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., owner_epoch: _Optional[int] = ..., outcome: _Optional[_Union[TaskOutcome, str]] = ..., result: _Optional[bytes] = ..., error: _Optional[str] = ..., run_seconds: _Optional[float] = ...) -> None: ...

class ResultAck(_message.Message):
    __slots__ = ("task_id", "attempt", "recorded", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    recorded: bool
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., recorded: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelAttempt(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class BackupRecord(_message.Message):
    __slots__ = ("owner_id", "task_id", "revision", "owner_epoch", "record", "deleted", "finished", "submitter_id", "provisional", "confirmed")
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    OWNER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVISIONAL_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    owner_id: str
    task_id: str
    revision: int
    owner_epoch: int
    record: bytes
    deleted: bool
    finished: bytes
    submitter_id: str
    provisional: bool
    confirmed: bool
    def __init__(self, owner_id: _Optional[str] = ..., task_id: _Optional[str] = ..., revision: _Optional[int] = ..., owner_epoch: _Optional[int] = ..., record: _Optional[bytes] = ..., deleted: _Optional[bool] = ..., finished: _Optional[bytes] = ..., submitter_id: _Optional[str] = ..., provisional: _Optional[bool] = ..., confirmed: _Optional[bool] = ...) -> None: ...

class BackupAck(_message.Message):
    __slots__ = ("task_id", "revision", "refused", "forwarded")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    revision: int
    refused: bool
    forwarded: bool
    def __init__(self, task_id: _Optional[str] = ..., revision: _Optional[int] = ..., refused: _Optional[bool] = ..., forwarded: _Optional[bool] = ...) -> None: ...

class Handover(_message.Message):
    __slots__ = ("task_id", "owner_id", "owner_address", "owner_epoch", "previous_owner_id", "why")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OWNER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    owner_id: str
    owner_address: str
    owner_epoch: int
    previous_owner_id: str
    why: str
    def __init__(self, task_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., owner_address: _Optional[str] = ..., owner_epoch: _Optional[int] = ..., previous_owner_id: _Optional[str] = ..., why: _Optional[str] = ...) -> None: ...

class MemoryMessage(_message.Message):
    __slots__ = ("hello", "entries", "ack", "forwards", "forward_results", "primary")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    FORWARDS_FIELD_NUMBER: _ClassVar[int]
    FORWARD_RESULTS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    entries: _containers.RepeatedCompositeFieldContainer[MemoryEntry]
    ack: MemoryAck
    forwards: _containers.RepeatedCompositeFieldContainer[ForwardedWrite]
    forward_results: _containers.RepeatedCompositeFieldContainer[ForwardResult]
    primary: PrimaryClaim
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[MemoryEntry, _Mapping]]] = ..., ack: _Optional[_Union[MemoryAck, _Mapping]] = ..., forwards: _Optional[_Iterable[_Union[ForwardedWrite, _Mapping]]] = ..., forward_results: _Optional[_Iterable[_Union[ForwardResult, _Mapping]]] = ..., primary: _Optional[_Union[PrimaryClaim, _Mapping]] = ...) -> None: ...

class PrimaryClaim(_message.Message):
    __slots__ = ("node_id", "epoch", "lease_seconds")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    epoch: int
    lease_seconds: float
    def __init__(self, node_id: _Optional[str] = ..., epoch: _Optional[int] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class MemoryEntry(_message.Message):
    __slots__ = ("seq", "origin_id", "memory_type", "key", "frame", "hops_left", "epoch", "position", "seen_by")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    HOPS_LEFT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SEEN_BY_FIELD_NUMBER: _ClassVar[int]
    seq: int
    origin_id: str
    memory_type: str
    key: str
    frame: bytes
    hops_left: int
    epoch: int
    position: int
    seen_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, seq: _Optional[int] = ..., origin_id: _Optional[str] = ..., memory_type: _Optional[str] = ..., key: _Optional[str] = ..., frame: _Optional[bytes] = ..., hops_left: _Optional[int] = ..., epoch: _Optional[int] = ..., position: _Optional[int] = ..., seen_by: _Optional[_Iterable[str]] = ...) -> None: ...

class MemoryAck(_message.Message):
    __slots__ = ("through_seq", "refused")
    THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    through_seq: int
    refused: _containers.RepeatedCompositeFieldContainer[EntryRefused]
    def __init__(self, through_seq: _Optional[int] = ..., refused: _Optional[_Iterable[_Union[EntryRefused, _Mapping]]] = ...) -> None: ...

class EntryRefused(_message.Message):
    __slots__ = ("seq", "reason")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    reason: str
    def __init__(self, seq: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ForwardedWrite(_message.Message):
    __slots__ = ("request_id", "memory_type", "key", "frame", "epoch")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    memory_type: str
    key: str
    frame: bytes
    epoch: int
    def __init__(self, request_id: _Optional[int] = ..., memory_type: _Optional[str] = ..., key: _Optional[str] = ..., frame: _Optional[bytes] = ..., epoch: _Optional[int] = ...) -> None: ...

class ForwardResult(_message.Message):
    __slots__ = ("request_id", "accepted", "epoch", "position", "primary_id", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    accepted: bool
    epoch: int
    position: int
    primary_id: str
    reason: str
    def __init__(self, request_id: _Optional[int] = ..., accepted: _Optional[bool] = ..., epoch: _Optional[int] = ..., position: _Optional[int] = ..., primary_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DigestRequest(_message.Message):
    __slots__ = ("caller", "digests", "log")
    class DigestsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    CALLER_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    caller: Hello
    digests: _containers.ScalarMap[int, str]
    log: bool
    def __init__(self, caller: _Optional[_Union[Hello, _Mapping]] = ..., digests: _Optional[_Mapping[int, str]] = ..., log: _Optional[bool] = ...) -> None: ...

class DigestReply(_message.Message):
    __slots__ = ("digests", "differing", "published")
    class DigestsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    DIFFERING_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    digests: _containers.ScalarMap[int, str]
    differing: _containers.RepeatedScalarFieldContainer[int]
    published: bool
    def __init__(self, digests: _Optional[_Mapping[int, str]] = ..., differing: _Optional[_Iterable[int]] = ..., published: _Optional[bool] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("caller", "buckets", "memory_type", "keys", "versions", "have", "page_bytes")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TYPE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    HAVE_FIELD_NUMBER: _ClassVar[int]
    PAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    caller: Hello
    buckets: _containers.RepeatedScalarFieldContainer[int]
    memory_type: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    versions: bool
    have: _containers.RepeatedScalarFieldContainer[int]
    page_bytes: int
    def __init__(self, caller: _Optional[_Union[Hello, _Mapping]] = ..., buckets: _Optional[_Iterable[int]] = ..., memory_type: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., versions: _Optional[bool] = ..., have: _Optional[_Iterable[int]] = ..., page_bytes: _Optional[int] = ...) -> None: ...

class PullChunk(_message.Message):
    __slots__ = ("bucket", "frames", "more")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    bucket: int
    frames: _containers.RepeatedScalarFieldContainer[bytes]
    more: bool
    def __init__(self, bucket: _Optional[int] = ..., frames: _Optional[_Iterable[bytes]] = ..., more: _Optional[bool] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("caller", "submission")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_FIELD_NUMBER: _ClassVar[int]
    caller: Hello
    submission: bytes
    def __init__(self, caller: _Optional[_Union[Hello, _Mapping]] = ..., submission: _Optional[bytes] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("task_id", "owner_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    owner_id: str
    def __init__(self, task_id: _Optional[str] = ..., owner_id: _Optional[str] = ...) -> None: ...

class GetTasksRequest(_message.Message):
    __slots__ = ("caller", "task_ids", "status", "limit", "parent_id", "with_attempts", "wait_seconds", "counts", "local_only")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    caller: Hello
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    status: str
    limit: int
    parent_id: str
    with_attempts: bool
    wait_seconds: float
    counts: bool
    local_only: bool
    def __init__(self, caller: _Optional[_Union[Hello, _Mapping]] = ..., task_ids: _Optional[_Iterable[str]] = ..., status: _Optional[str] = ..., limit: _Optional[int] = ..., parent_id: _Optional[str] = ..., with_attempts: _Optional[bool] = ..., wait_seconds: _Optional[float] = ..., counts: _Optional[bool] = ..., local_only: _Optional[bool] = ...) -> None: ...

class GetTasksReply(_message.Message):
    __slots__ = ("tasks", "counts")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TASKS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedScalarFieldContainer[bytes]
    counts: _containers.ScalarMap[str, int]
    def __init__(self, tasks: _Optional[_Iterable[bytes]] = ..., counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("caller", "task_ids", "local_only")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    caller: Hello
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    local_only: bool
    def __init__(self, caller: _Optional[_Union[Hello, _Mapping]] = ..., task_ids: _Optional[_Iterable[str]] = ..., local_only: _Optional[bool] = ...) -> None: ...

class CancelReply(_message.Message):
    __slots__ = ("outcomes",)
    class OutcomesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.ScalarMap[str, str]
    def __init__(self, outcomes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReplayRequest(_message.Message):
    __slots__ = ("caller", "task_id", "node_id", "node_name", "why")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    caller: Hello
    task_id: str
    node_id: str
    node_name: str
    why: str
    def __init__(self, caller: _Optional[_Union[Hello, _Mapping]] = ..., task_id: _Optional[str] = ..., node_id: _Optional[str] = ..., node_name: _Optional[str] = ..., why: _Optional[str] = ...) -> None: ...

class ReplayReply(_message.Message):
    __slots__ = ("replayed", "found")
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    replayed: bool
    found: bool
    def __init__(self, replayed: _Optional[bool] = ..., found: _Optional[bool] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("caller", "view")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    caller: Hello
    view: str
    def __init__(self, caller: _Optional[_Union[Hello, _Mapping]] = ..., view: _Optional[str] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("view",)
    VIEW_FIELD_NUMBER: _ClassVar[int]
    view: bytes
    def __init__(self, view: _Optional[bytes] = ...) -> None: ...

class RecallRequest(_message.Message):
    __slots__ = ("caller", "key", "memory_type")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TYPE_FIELD_NUMBER: _ClassVar[int]
    caller: Hello
    key: str
    memory_type: str
    def __init__(self, caller: _Optional[_Union[Hello, _Mapping]] = ..., key: _Optional[str] = ..., memory_type: _Optional[str] = ...) -> None: ...

class RecallReply(_message.Message):
    __slots__ = ("recollection", "found")
    RECOLLECTION_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    recollection: bytes
    found: bool
    def __init__(self, recollection: _Optional[bytes] = ..., found: _Optional[bool] = ...) -> None: ...

class RememberRequest(_message.Message):
    __slots__ = ("caller", "memory_type", "key", "value", "priority")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    caller: Hello
    memory_type: str
    key: str
    value: bytes
    priority: int
    def __init__(self, caller: _Optional[_Union[Hello, _Mapping]] = ..., memory_type: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[bytes] = ..., priority: _Optional[int] = ...) -> None: ...

class RememberReply(_message.Message):
    __slots__ = ("key", "sync_id", "not_acknowledged")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SYNC_ID_FIELD_NUMBER: _ClassVar[int]
    NOT_ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    key: str
    sync_id: str
    not_acknowledged: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., sync_id: _Optional[str] = ..., not_acknowledged: _Optional[_Iterable[str]] = ...) -> None: ...
