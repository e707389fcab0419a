package kafka

import (
	"cmp"
	"slices"
	"sync"

	"github.com/IBM/sarama"

	"github.com/gamelan-go/executor/internal/telemetry"
)

// claimLags holds the claims a source reads now, with their offset
// trackers, so that their lag can be read at scrape time: the consumer
// loop pays nothing for it.
type claimLags struct {
	mu     sync.Mutex
	claims map[*offsetTracker]sarama.ConsumerGroupClaim
}

// hold records that claim is read, tracked by tracker, until the function
// it returns is called (when the claim ends: the partition is revoked or
// the session over), so that no series is left for a partition gone.
func (l *claimLags) hold(claim sarama.ConsumerGroupClaim, tracker *offsetTracker) (release func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.claims == nil {
		l.claims = make(map[*offsetTracker]sarama.ConsumerGroupClaim)
	}
	l.claims[tracker] = claim
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.claims, tracker)
	}
}

// ConsumerLag returns the lag of each partition the source holds: the
// partition's high watermark (as of the last fetch) minus the offset the
// group resumes from, which counts the records not yet finished, whether
// unread, queued or running. Partitions whose position is not known yet
// (nothing read and nothing committed) are left out.
func (s *TaskSource) ConsumerLag() []telemetry.PartitionLag {
	s.lag.mu.Lock()
	defer s.lag.mu.Unlock()
	lags := make([]telemetry.PartitionLag, 0, len(s.lag.claims))
	for tracker, claim := range s.lag.claims {
		committed, known := tracker.committedOffset()
		if !known {
			continue
		}
		lags = append(lags, telemetry.PartitionLag{Topic: tracker.topic, Partition: tracker.partition,
			Lag: max(0, claim.HighWaterMarkOffset()-committed)})
	}
	slices.SortFunc(lags, func(a, b telemetry.PartitionLag) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return lags
}
