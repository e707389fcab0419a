#!/usr/bin/env python3
"""A workflow engine on gRPC C-core (Python grpcio), for the interop suite.

It serves tech.kayys.gamelan.grpc.v1.ExecutorService the way the Gamelan
engine does where it matters to an executor, with grpcio's default server
options (so its keepalive policy is C-core's default: a client ping at most
every 5 minutes, none without an open call, two strikes, then GOAWAY
ENHANCE_YOUR_CALM "too_many_pings"):

- RegisterExecutor records the executor and answers an empty status;
- Heartbeat answers success even for an executor it does not know, as
  Gamelan does, so that heartbeats cannot tell an executor it was forgotten;
- StreamTasks and ExecuteStream send the tasks queued for the executor;
- ReportResults records results;
- it pushes tasks to an executor's Execute endpoint when told to.

A restart forgets every executor (a new engine process would), keeping the
queued tasks and the results (a real engine keeps them in its database).

The test drives it over a small JSON API on 127.0.0.1 (the control port):
GET /state, POST /enqueue, POST /push, POST /restart. The message classes
are built at run time from a FileDescriptorSet the test writes (no
generated Python code), so only grpcio and protobuf are needed.

Usage: engine.py --descriptors FILE
It prints one JSON line with its gRPC and control ports, then serves until
stdin closes.
"""

import argparse
import collections
import json
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

SERVICE = "tech.kayys.gamelan.grpc.v1.ExecutorService"
V1 = "tech.kayys.gamelan.grpc.v1."


def message_classes(path):
    """Returns a function from a full message name to its class."""
    with open(path, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    factory = message_factory.MessageFactory(pool)
    return lambda name: factory.GetPrototype(pool.FindMessageTypeByName(name))


class State:
    """What the engine knows. Every field is guarded by cond."""

    def __init__(self):
        self.cond = threading.Condition()
        self.registrations = {}  # executor id -> {"type", "endpoint", "count"}
        self.heartbeats = collections.Counter()  # executor id -> heartbeats received
        self.queues = collections.defaultdict(collections.deque)  # executor id -> tasks (dicts)
        self.results = []  # dicts, in arrival order
        self.acks = collections.Counter()  # executor id -> acknowledgements on ExecuteStream
        self.streams = collections.Counter()  # executor id -> streams open now
        self.stream_opens = collections.Counter()  # executor id -> streams ever opened
        self.generation = 0  # bumped by each restart

    def forget_executors(self):
        with self.cond:
            self.registrations.clear()
            self.heartbeats.clear()
            self.generation += 1
            self.cond.notify_all()


class Engine:
    def __init__(self, cls, state):
        self.cls = cls
        self.state = state
        self.server = None
        self.port = 0

    # ExecutorService

    def register(self, req, context):
        with self.state.cond:
            entry = self.state.registrations.setdefault(req.executor_id, {"count": 0})
            entry.update(type=req.executor_type, endpoint=req.endpoint, generation=self.state.generation)
            entry["count"] += 1
            self.state.cond.notify_all()
        return self.cls(V1 + "ExecutorRegistration")(executor_id=req.executor_id)

    def unregister(self, req, context):
        with self.state.cond:
            self.state.registrations.pop(req.executor_id, None)
            self.state.cond.notify_all()
        return self.cls("google.protobuf.Empty")()

    def heartbeat(self, req, context):
        with self.state.cond:
            self.state.heartbeats[req.executor_id] += 1  # known or not: success, as Gamelan answers
            self.state.cond.notify_all()
        return self.cls("google.protobuf.Empty")()

    def next_task(self, executor_id, context):
        """Waits for a task queued for the executor while the call lasts."""
        with self.state.cond:
            while context.is_active():
                queue = self.state.queues[executor_id]
                if queue:
                    return queue.popleft()
                self.state.cond.wait(0.2)
        return None

    def task_message(self, task):
        message = self.cls(V1 + "ExecutionTask")(
            task_id=task["task_id"], run_id=task["run_id"], node_id=task["node_id"],
            node_type=task.get("node_type", ""), attempt=task.get("attempt", 1),
            execution_token=task.get("execution_token", ""))
        message.context.update(task.get("context", {}))
        return message

    def open_stream(self, executor_id):
        with self.state.cond:
            self.state.streams[executor_id] += 1
            self.state.stream_opens[executor_id] += 1
            self.state.cond.notify_all()

    def close_stream(self, executor_id):
        with self.state.cond:
            self.state.streams[executor_id] -= 1
            self.state.cond.notify_all()

    def stream_tasks(self, req, context):
        self.open_stream(req.executor_id)
        try:
            while context.is_active():
                task = self.next_task(req.executor_id, context)
                if task is not None:
                    yield self.task_message(task)
        finally:
            self.close_stream(req.executor_id)

    def record(self, result):
        entry = json_format.MessageToDict(result, preserving_proto_field_name=True)
        entry["output_bytes"] = result.output.ByteSize()
        entry.pop("output", None)  # large outputs stay out of /state
        with self.state.cond:
            self.state.results.append(entry)
            self.state.cond.notify_all()

    def report_results(self, request_iterator, context):
        for result in request_iterator:
            self.record(result)
        return self.cls("google.protobuf.Empty")()

    def execute_stream(self, request_iterator, context):
        hello = next(request_iterator)  # the executor names itself first
        executor_id = hello.heartbeat.executor_id
        self.open_stream(executor_id)

        def receive():
            try:
                for message in request_iterator:
                    kind = message.WhichOneof("message")
                    with self.state.cond:
                        if kind == "ack":
                            self.state.acks[executor_id] += 1
                        elif kind == "heartbeat":
                            self.state.heartbeats[executor_id] += 1
                        self.state.cond.notify_all()
                    if kind == "result":
                        self.record(message.result)
            except grpc.RpcError:
                pass  # the stream ended

        threading.Thread(target=receive, daemon=True).start()
        try:
            while context.is_active():
                task = self.next_task(executor_id, context)
                if task is not None:
                    yield self.cls(V1 + "EngineMessage")(task=self.task_message(task))
        finally:
            self.close_stream(executor_id)

    # serving

    def handlers(self):
        c = self.cls
        return grpc.method_handlers_generic_handler(SERVICE, {
            "RegisterExecutor": grpc.unary_unary_rpc_method_handler(
                self.register, c(V1 + "RegisterExecutorRequest").FromString,
                c(V1 + "ExecutorRegistration").SerializeToString),
            "UnregisterExecutor": grpc.unary_unary_rpc_method_handler(
                self.unregister, c(V1 + "UnregisterExecutorRequest").FromString,
                c("google.protobuf.Empty").SerializeToString),
            "Heartbeat": grpc.unary_unary_rpc_method_handler(
                self.heartbeat, c(V1 + "HeartbeatRequest").FromString,
                c("google.protobuf.Empty").SerializeToString),
            "StreamTasks": grpc.unary_stream_rpc_method_handler(
                self.stream_tasks, c(V1 + "StreamTasksRequest").FromString,
                c(V1 + "ExecutionTask").SerializeToString),
            "ReportResults": grpc.stream_unary_rpc_method_handler(
                self.report_results, c(V1 + "TaskResult").FromString,
                c("google.protobuf.Empty").SerializeToString),
            "ExecuteStream": grpc.stream_stream_rpc_method_handler(
                self.execute_stream, c(V1 + "ExecutorMessage").FromString,
                c(V1 + "EngineMessage").SerializeToString),
        })

    def start(self):
        # Default server options: only a thread pool, which grpcio requires.
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        server.add_generic_rpc_handlers((self.handlers(),))
        self.port = server.add_insecure_port("127.0.0.1:%d" % self.port)
        server.start()
        self.server = server

    def stop(self, grace):
        self.server.stop(grace).wait()
        with self.state.cond:
            self.state.cond.notify_all()  # wake streams waiting for tasks


class Pusher:
    """Calls executors' Execute endpoints, the way Gamelan pushes tasks."""

    def __init__(self, cls):
        self.cls = cls
        self.channels = {}
        self.lock = threading.Lock()

    def push(self, endpoint, fields):
        with self.lock:
            channel = self.channels.get(endpoint)
            if channel is None:
                channel = self.channels[endpoint] = grpc.insecure_channel(endpoint)
        execute = channel.unary_unary(
            "/tech.kayys.gamelan.dispatcher.Executor/Execute",
            request_serializer=self.cls("tech.kayys.gamelan.dispatcher.ExecutionRequest").SerializeToString,
            response_deserializer=self.cls("tech.kayys.gamelan.dispatcher.ExecutionAck").FromString)
        request = self.cls("tech.kayys.gamelan.dispatcher.ExecutionRequest")(**fields)
        ack = execute(request, timeout=10)
        return {"accepted": ack.accepted, "code": ack.code, "message": ack.message}


def control_handler(engine, state, pusher):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body):
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def body(self):
            length = int(self.headers.get("Content-Length", 0))
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self):
            if self.path != "/state":
                return self.answer(404, {"error": "unknown path"})
            with state.cond:
                self.answer(200, {
                    "registrations": state.registrations, "heartbeats": state.heartbeats,
                    "results": state.results, "acks": state.acks, "streams": state.streams,
                    "stream_opens": state.stream_opens, "generation": state.generation,
                    "queued": {k: len(v) for k, v in state.queues.items()},
                })

        def do_POST(self):
            body = self.body()
            try:
                if self.path == "/enqueue":
                    with state.cond:
                        state.queues[body["executor_id"]].extend(body["tasks"])
                        state.cond.notify_all()
                    return self.answer(200, {})
                if self.path == "/push":
                    return self.answer(200, pusher.push(body["endpoint"], body["request"]))
                if self.path == "/restart":
                    # fast: down for no time; graceful: the server finishes
                    # its calls first; slow: down for down_seconds.
                    engine.stop(body.get("grace", 0))
                    state.forget_executors()
                    time.sleep(body.get("down_seconds", 0))
                    engine.start()
                    return self.answer(200, {"port": engine.port})
            except grpc.RpcError as err:
                return self.answer(502, {"error": "%s: %s" % (err.code(), err.details())})
            self.answer(404, {"error": "unknown path"})

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--descriptors", required=True)
    args = parser.parse_args()
    cls = message_classes(args.descriptors)
    state = State()
    engine = Engine(cls, state)
    engine.start()
    control = ThreadingHTTPServer(("127.0.0.1", 0), control_handler(engine, state, Pusher(cls)))
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print(json.dumps({"grpc_port": engine.port, "control_port": control.server_address[1],
                      "grpcio": grpc.__version__}), flush=True)
    sys.stdin.read()  # the test closes stdin (or dies) to stop the engine
    engine.stop(0)


if __name__ == "__main__":
    main()
