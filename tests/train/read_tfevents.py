#!/usr/bin/env python3
"""Reads TensorBoard event files independently of the trainer: TFRecord framing checked against
the spec (u64 length, masked CRC32C of the length, payload, masked CRC32C of the payload; the
CRC32C here is a bitwise implementation of the Castagnoli polynomial), and each payload decoded
as a `tensorflow.Event` with google.protobuf from descriptors written out below after
tensorflow/core/util/event.proto and tensorflow/core/framework/summary.proto. A payload must
re-serialize to the same bytes and hold no unknown fields.

Usage: read_tfevents.py LOG_DIR OUT.json
OUT.json: {"files": [...], "file_versions": [...], "events": [{"file", "wall_time", "step",
           "values": {tag: simple_value}}]}
Exits non-zero (with the reason on stderr) on any framing, CRC or decoding error.
"""
import json
import os
import struct
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked_crc(data):
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def event_class():
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tb_event_subset.proto", package="tensorflow", syntax="proto3"
    )
    summary = fdp.message_type.add(name="Summary")
    value = summary.nested_type.add(name="Value")
    # As in summary.proto, simple_value is a member of `oneof value` (so 0.0 is present).
    value.oneof_decl.add(name="value")
    value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    value.field.add(
        name="simple_value", number=2, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL, oneof_index=0
    )
    value.field.add(name="node_name", number=7, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    summary.field.add(
        name="value", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
        type_name=".tensorflow.Summary.Value",
    )
    event = fdp.message_type.add(name="Event")
    # As in event.proto: file_version and summary are members of `oneof what`.
    event.oneof_decl.add(name="what")
    event.field.add(name="wall_time", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    event.field.add(name="step", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    event.field.add(
        name="file_version", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, oneof_index=0
    )
    event.field.add(
        name="summary", number=5, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
        type_name=".tensorflow.Summary", oneof_index=0,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Event"))


def unknown_fields(msg):
    try:
        from google.protobuf import unknown_fields as uf
    except ImportError:  # older protobuf: re-serialization equality below still checks
        return 0
    n = len(uf.UnknownFieldSet(msg))
    if msg.HasField("summary"):
        n += len(uf.UnknownFieldSet(msg.summary))
        for v in msg.summary.value:
            n += len(uf.UnknownFieldSet(v))
    return n


def records(path):
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        if len(data) - pos < 12:
            raise ValueError(f"{path}: truncated header at byte {pos}")
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (crc_len,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        if crc_len != masked_crc(header):
            raise ValueError(f"{path}: length CRC mismatch at byte {pos}")
        start = pos + 12
        end = start + length
        if end + 4 > len(data):
            raise ValueError(f"{path}: truncated record at byte {pos}")
        payload = data[start:end]
        (crc_data,) = struct.unpack("<I", data[end : end + 4])
        if crc_data != masked_crc(payload):
            raise ValueError(f"{path}: data CRC mismatch at byte {pos}")
        yield payload
        pos = end + 4


def main():
    log_dir, out = sys.argv[1], sys.argv[2]
    Event = event_class()
    files = sorted(f for f in os.listdir(log_dir) if "tfevents" in f)
    result = {"files": files, "file_versions": [], "events": []}
    for name in files:
        for payload in records(os.path.join(log_dir, name)):
            ev = Event()
            ev.ParseFromString(payload)
            if unknown_fields(ev):
                raise ValueError(f"{name}: event with unknown fields: {ev}")
            if ev.SerializeToString() != payload:
                raise ValueError(f"{name}: event does not re-serialize to the same bytes")
            what = ev.WhichOneof("what")
            if what == "file_version":
                result["file_versions"].append(ev.file_version)
                continue
            if what != "summary":
                raise ValueError(f"{name}: event with neither file_version nor summary")
            for v in ev.summary.value:
                if v.WhichOneof("value") != "simple_value":
                    raise ValueError(f"{name}: value {v.tag!r} without simple_value")
            values = {v.tag: v.simple_value for v in ev.summary.value}
            result["events"].append(
                {"file": name, "wall_time": ev.wall_time, "step": ev.step, "values": values}
            )
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
