package e2e

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
)

// groupPartitions is the number of partitions of the tasks topic, two for
// each of the three processes.
const groupPartitions = 6

// groupTasks is how many tasks are produced, at most groupWindow of them
// unanswered at a time.
const groupTasks, groupWindow = 3000, 60

// TestKafkaGroupSIGKILLMidLoad runs three executor processes as one
// service (same NAME: one consumer group, one executor id) and kills one
// with SIGKILL while the load runs: the group becomes stable with the two
// others, which hold every partition between them (the victim's moved),
// every task produced is answered (unique results == tasks), and every
// duplicate result is a redelivery of a task on one of the victim's
// partitions, which it may have answered without committing.
func TestKafkaGroupSIGKILLMidLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes under load")
	}
	victim, duplicates := groupUnderLoad(t, syscall.SIGKILL)
	t.Logf("SIGKILL: %d duplicate results, all on the victim's partitions %v", duplicates, victim)
}

// TestKafkaGroupSIGTERMMidLoad stops one of three executor processes
// gracefully (SIGTERM) while the load runs: it drains, commits what it
// finished, leaves the group and exits 0; the two others take its
// partitions, and every task produced is answered.
func TestKafkaGroupSIGTERMMidLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes under load")
	}
	_, duplicates := groupUnderLoad(t, syscall.SIGTERM)
	t.Logf("SIGTERM: %d duplicate results", duplicates)
}

// groupUnderLoad is the scenario of both tests: three processes, each
// ready (/q/health/ready) once the group is stable; a steady load of
// groupTasks tasks, sig to one process when a third are answered, the rest
// of the load produced through the rebalance; then the checks. It returns
// the victim's partitions and the duplicate count.
func groupUnderLoad(t *testing.T, sig syscall.Signal) ([]int32, int) {
	t.Helper()
	broker := kafkatest.Start(t, kafkatest.WithPartitions(groupPartitions))
	ctx := deadline(t, 2*time.Minute)
	began := time.Now()
	procs := make([]*process, 3)
	for i := range procs {
		name := fmt.Sprintf("p%d", i+1)
		procs[i] = startProcess(t, name, kafkaEnv(broker, name))
	}
	require.NoError(t, broker.WaitGroupStable(ctx, kafkaGroup, 3))
	assignment := waitForAssignment(t, broker, procs)
	for _, p := range procs {
		p.waitReady(t)
	}
	t.Logf("three processes stable in group %s after %s: %v", kafkaGroup, time.Since(began).Round(time.Millisecond), assignment)
	victim, survivors := procs[0], procs[1:]
	victimPartitions := assignment[victim]
	require.NotEmpty(t, victimPartitions, "the victim holds partitions")

	tally := broker.Results(t)
	producer := broker.BulkProducer(t)
	tasks := make(map[string]kafka.TaskMessage, groupTasks)
	// The engine keeps groupWindow tasks unanswered: a steady load that is
	// still being produced when the victim goes, and that stalls on the
	// victim's partitions until they move.
	produced := 0
	produceUntil := func(answered int) {
		t.Helper()
		for produced < groupTasks && tally.Unique() < answered {
			require.NoError(t, tally.WaitForUnique(ctx, produced-groupWindow+1))
			for ; produced < groupTasks && produced-tally.Unique() < groupWindow; produced++ {
				msg := taxTask(fmt.Sprintf("run-group-%02d", produced%24), produced)
				tasks[kafkatest.TaskKey(msg)] = msg
				producer.Produce(ctx, msg)
			}
		}
	}
	produceUntil(groupTasks / 3)
	lagAtStop := victimLag(t, broker, victimPartitions)
	producedAtStop, answeredAtStop := produced, tally.Unique()
	victim.signal(t, sig)
	stopped := time.Now()
	produceUntil(groupTasks)
	require.NoError(t, producer.Flush(ctx))
	require.Equal(t, groupTasks, producer.Acknowledged(), "tasks acknowledged by the broker")

	exitErr := victim.wait(t)
	if sig == syscall.SIGKILL {
		require.Error(t, exitErr, "a killed process does not exit cleanly")
	} else {
		require.NoError(t, exitErr, "SIGTERM: clean exit; stderr: %s", victim.stderr.String())
		assert.NotEmpty(t, victim.linesWith("service stopped"), "the stopped process logged its stop")
	}

	// The victim's partitions moved: two members hold all six.
	require.NoError(t, broker.WaitGroupStable(ctx, kafkaGroup, 2))
	moved := waitForAssignment(t, broker, survivors)
	for _, p := range survivors {
		p.waitReady(t)
	}
	var held []int32
	for _, partitions := range moved {
		held = append(held, partitions...)
	}
	slices.Sort(held)
	require.Equal(t, allPartitions(), held, "the two survivors hold every partition: %v", moved)

	require.NoError(t, tally.WaitForUnique(ctx, len(tasks)))
	answered := time.Since(stopped)
	require.NoError(t, broker.WaitForLag(ctx, kafkaGroup, kafkatest.TasksTopic, 0))
	require.NoError(t, tally.CatchUp(ctx))

	require.Empty(t, tally.Malformed())
	unique := tally.UniqueResults()
	require.Len(t, unique, len(tasks), "unique results == tasks produced")
	failures := 0
	for key, msg := range tasks {
		res, ok := unique[key]
		amount := msg.Context["amount"].(float64)
		if !assert.True(t, ok, "no result for %s", key) ||
			!assert.Equal(t, "COMPLETED", res.Status, key) ||
			!assert.Equal(t, amount*0.1, res.Output["tax"], key) ||
			!assert.Equal(t, msg.Token, res.ExecutionToken, key) ||
			!assert.Equal(t, kafkaTaxExecutorID, res.ExecutorID, key) {
			failures++
		}
		if failures >= 5 {
			t.Fatal("too many missing or wrong results")
		}
	}

	// A duplicate is a redelivery: a task of a partition that moved from
	// the victim, answered by it but not committed before it went.
	duplicated := tally.DuplicatedKeys()
	var elsewhere []string
	for _, key := range duplicated {
		partition, ok := producer.Partition(key)
		require.True(t, ok, "duplicate result %s of a task never produced", key)
		if !slices.Contains(victimPartitions, partition) {
			elsewhere = append(elsewhere, fmt.Sprintf("%s (partition %d)", key, partition))
		}
	}
	assert.Empty(t, elsewhere, "duplicate results of tasks on partitions the victim (%v) did not hold", victimPartitions)
	t.Logf("%s sent to %s with %d tasks produced, %d answered, %d of its partitions' records uncommitted; all %d tasks answered %s later; %d duplicate results for %d tasks",
		signalName(sig), victim, producedAtStop, answeredAtStop, lagAtStop,
		len(tasks), answered.Round(time.Millisecond), tally.Duplicates(), len(duplicated))

	for _, p := range survivors {
		p.signal(t, syscall.SIGTERM)
	}
	for _, p := range survivors {
		require.NoError(t, p.wait(t), "%s exits cleanly", p)
	}
	return victimPartitions, tally.Duplicates()
}

// waitForAssignment waits until each process has logged joining the
// group's current generation and returns the partitions each holds, after
// checking them against the broker's view of the group.
func waitForAssignment(t *testing.T, broker *kafkatest.Broker, procs []*process) map[*process][]int32 {
	t.Helper()
	cluster := broker.Cluster()
	require.NotNil(t, cluster)
	info := cluster.GroupInfo(kafkaGroup)
	require.NotNil(t, info, "group %s", kafkaGroup)
	var fromBroker [][]int32
	for _, m := range info.Members {
		fromBroker = append(fromBroker, sortedPartitions(m))
	}
	assignment := make(map[*process][]int32, len(procs))
	var fromLogs [][]int32
	for _, p := range procs {
		line := p.waitForJoin(t, info.Epoch)
		assignment[p] = partitionsOf(t, line)
		fromLogs = append(fromLogs, assignment[p])
	}
	sortLists(fromBroker)
	sortLists(fromLogs)
	require.Equal(t, fromBroker, fromLogs, "partitions the processes logged vs the group's assignment (generation %d)", info.Epoch)
	return assignment
}

// waitForJoin waits until the process logs joining generation.
func (p *process) waitForJoin(t *testing.T, generation int32) map[string]any {
	t.Helper()
	timeout := time.After(startTimeout)
	for {
		p.mu.Lock()
		changed := p.changed
		p.mu.Unlock()
		for _, line := range p.linesWith("joined kafka consumer group") {
			if line["generation"] == float64(generation) {
				return line
			}
		}
		select {
		case <-changed:
		case <-p.exited:
			t.Fatalf("%s exited before joining generation %d", p, generation)
		case <-timeout:
			t.Fatalf("%s did not join generation %d; stdout:\n%s", p, generation, p.text())
		}
	}
}

func sortedPartitions(m kfake.GroupMember) []int32 {
	partitions := slices.Clone(m.Assignment[kafkatest.TasksTopic])
	slices.Sort(partitions)
	if partitions == nil {
		partitions = []int32{}
	}
	return partitions
}

func sortLists(lists [][]int32) {
	slices.SortFunc(lists, func(a, b []int32) int { return slices.Compare(a, b) })
}

func allPartitions() []int32 {
	all := make([]int32, groupPartitions)
	for i := range all {
		all[i] = int32(i)
	}
	return all
}

// victimLag returns how many records of partitions the group has not
// committed yet.
func victimLag(t *testing.T, broker *kafkatest.Broker, partitions []int32) int64 {
	t.Helper()
	cluster := broker.Cluster()
	require.NotNil(t, cluster)
	committed, err := broker.CommittedOffsets(kafkaGroup, kafkatest.TasksTopic)
	require.NoError(t, err)
	var lag int64
	for _, p := range cluster.PartitionInfos(kafkatest.TasksTopic) {
		if slices.Contains(partitions, p.Partition) {
			from, ok := committed[p.Partition]
			if !ok {
				from = p.LogStartOffset
			}
			lag += p.HighWatermark - from
		}
	}
	return lag
}

// signalName names the signals the tests send.
func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return sig.String()
}
