// Package service assembles the executor service: it reads the settings
// (Config and one section per transport), plans which transport serves each
// hosted executor type, builds what the plan uses with Wire (wire.go: one
// provider set per technology, each provider returning its cleanup), serves
// the health probes, and runs until its context ends. Run is what main
// calls; RunWithPorts is the same service with ports supplied by the caller,
// for component tests.
//
// transports.go holds the one table of transports: a fork adds a transport
// with its adapter package and one entry there (docs/forking.md), and hosts
// its own executor types in executors/hosted.go.
package service
