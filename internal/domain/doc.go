// Package domain holds the vocabulary of the executor runtime: tasks, results,
// executor descriptors, error codes and the Executor interface a handler
// implements. It imports only the standard library, and nothing else in this
// module depends on anything less stable than it.
package domain
