// Package service assembles the executor service: it reads the
// configuration, picks the adapters it names, wires them to the runtime with
// Wire, serves the health probes, and runs until its context ends. Run is
// what main calls; RunWithPorts is the same service with ports supplied by
// the caller, for component tests.
//
// A fork changes executors.go to host its own executor types; adding a
// transport is one case in each selector of providers.go.
package service
