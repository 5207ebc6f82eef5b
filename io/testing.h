// testing.h: test-only hooks of //io.
#pragma once

#include "absl/time/time.h"

namespace lwkt::io::testing {

// Makes every io_uring setup from now on (the probe in Runtime::create and each worker's
// ring) fail with `err` (an errno; 0 restores real setups), so that tests can see how each
// cause is named and how `automatic` falls back. Runs on: any OS thread.
void inject_setup_error(int err);

// Sizes of the worker rings created from now on (0, 0: the defaults, 256 SQ / 4096 CQ
// entries), so a test can overflow both queues with few operations. Runs on: any OS thread.
void set_ring_entries(unsigned sq, unsigned cq);

// How long a prepared operation may wait for others to share its submit while the worker
// has other threads to run (default 20 us; the count bound, 32, stays), so that tests of
// batching do not depend on how fast the machine switches. Runs on: any OS thread.
void set_batch_delay(absl::Duration d);

// The buffer pool of worker rings that create theirs from now on (0, 0: kPoolBuffers of
// kPoolBufferSize bytes; `buffers` a power of two), so that a test can run it dry.
void set_pool(unsigned buffers, unsigned size);

// Whether a worker with a ring kicks a parked worker with a ring through IORING_OP_MSG_RING
// (default) or through the parker's eventfd. Runs on: any OS thread.
void set_msg_ring_kicks(bool on);

// io_uring operations behave as if they could not be cancelled (a read stuck in a hung
// file system): shutdown and worker exit send no cancel, and worker exit waits only
// `exit_patience` for them. `false` restores real cancels and the 2 s wait.
void simulate_uncancellable_io(bool on, absl::Duration exit_patience = absl::Milliseconds(20));

// Ring-to-ring kicks are aimed at a descriptor that is not a ring, so every MSG_RING fails
// (EBADFD) and the sender's fallback to the target's eventfd must carry the kick.
void break_msg_ring_kicks(bool on);

}  // namespace lwkt::io::testing
