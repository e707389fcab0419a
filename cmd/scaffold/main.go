// Command scaffold prepares a fork of this template:
//
//	go run ./cmd/scaffold executor NAME [-transport grpc|kafka|rest]
//	go run ./cmd/scaffold module PATH
//
// "executor" writes a new executor type under executors/ (a compiling
// handler with its descriptor, and its unit test through executortest),
// adds it to the list of hosted types (executors/hosted.go), and prints what
// to edit next. "module" renames the Go module everywhere (go.mod, imports,
// the .proto files' go_package, docs), then regenerates the generated code
// (make generate, which needs protoc). Both work on the tree they are run
// in (-dir to name another).
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "scaffold: %v\n", err)
		os.Exit(1)
	}
}
