// connection.h: the server's shared state and the connection thread (internal to
// examples/httpd; server.h is the interface).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "examples/httpd/server.h"
#include "lwkt/runtime.h"
#include "lwkt/thread.h"
#include "msgport/msgport.h"

namespace httpd {

struct conn_entry {
  lwkt::thread* td = nullptr;
  bool idle = false;  // blocked waiting for the first byte of its next request
  std::size_t index = 0;  // in worker_state::conns
};

// One worker's connections: touched only on that worker (connection threads never move).
struct worker_state {
  std::vector<conn_entry*> conns;
};

struct server::state {
  options opts;
  std::unique_ptr<lwkt::Runtime> rt;
  int nworkers = 0;
  int port = 0;
  int root_fd = -1;
  std::string root_real;  // realpath of opts.root (files.h's fallback)
  std::vector<int> listen_fds;
  std::vector<lwkt::thread_ref> acceptors, dispatchers;
  std::unique_ptr<std::atomic<long>[]> open_per_worker;
  std::unique_ptr<std::atomic<lwkt::thread_port*>[]> ports;  // each worker's dispatcher
  std::vector<worker_state> ws;
  std::atomic<bool> draining{false};
  std::atomic<bool> dispatchers_stop{false};
  std::atomic<std::uint64_t> accepted{0}, requests{0}, handed_off{0};
  std::atomic<std::int64_t> open{0};
  ~state();
};

// Starts fd's connection thread on worker w (the caller counted it open). Runs on: an
// lwkt thread.
void start_connection(server::state* s, int fd, int w);
// The connection thread's body: serves fd until close, then closes it and uncounts it.
void run_connection(server::state* s, int fd, int w);
// Interrupts worker w's idle connections (drain). Runs on: an lwkt thread on worker w.
void interrupt_idle(server::state* s, int w);

}  // namespace httpd
