// A C face for libtorch's own distributed backend (c10d), so the Rust trainer can use the
// same TCPStore rendezvous, Gloo (CPU) and NCCL (CUDA) process groups that torch.distributed
// uses. Nothing here communicates by itself: every collective is c10d's.
//
// Tensors arrive as tch's `C_tensor*`, which torch-sys defines as `torch::Tensor*` (= at::Tensor).
// Errors never cross the boundary as exceptions: each call returns 0 on success, or 1 with a
// malloc'ed message in *err (freed by rf_free_string).

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#ifdef RF_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

void set_err(char** err, const std::string& msg) {
  if (err == nullptr) {
    return;
  }
  *err = static_cast<char*>(std::malloc(msg.size() + 1));
  if (*err != nullptr) {
    std::memcpy(*err, msg.c_str(), msg.size() + 1);
  }
}

template <typename F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    set_err(err, e.what());
  } catch (...) {
    set_err(err, "unknown C++ exception in c10d");
  }
  return 1;
}

at::Tensor& tensor(void* t) {
  return *static_cast<at::Tensor*>(t);
}

// GLOO_SOCKET_IFNAME (comma-separated), as torch.distributed honours it; otherwise the
// interface this host's name resolves to (loopback when it does not resolve).
std::vector<std::shared_ptr<::gloo::transport::Device>> gloo_devices() {
  std::vector<std::shared_ptr<::gloo::transport::Device>> devices;
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0') {
    std::string all(ifname);
    size_t start = 0;
    while (start <= all.size()) {
      size_t end = all.find(',', start);
      if (end == std::string::npos) {
        end = all.size();
      }
      if (end > start) {
        devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(
            all.substr(start, end - start)));
      }
      start = end + 1;
    }
  }
  if (devices.empty()) {
    devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  return devices;
}

} // namespace

extern "C" {

// 1 when this build can make NCCL process groups.
int rf_nccl_compiled() {
#ifdef RF_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

void rf_free_string(char* s) {
  std::free(s);
}

// backend: 0 = Gloo, 1 = NCCL (device_index = the CUDA device of this rank).
void* rf_pg_new(
    int backend,
    const char* host,
    int port,
    int rank,
    int world,
    long long timeout_ms,
    int device_index,
    char** err) {
  Group* g = nullptr;
  int rc = guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = rank == 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    c10::intrusive_ptr<c10d::Backend> pg;
    if (backend == 0) {
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      o->devices = gloo_devices();
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, o);
    } else {
#ifdef RF_WITH_NCCL
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
#else
      (void)device_index;
      throw std::runtime_error(
          "this regionfeat was built without NCCL: rebuild with `--features cuda` against a CUDA "
          "torch install (the wheel's nvidia/nccl and nvidia/cu13 headers)");
#endif
    }
    g = new Group{store, pg};
  });
  return rc == 0 ? g : nullptr;
}

void rf_pg_free(void* g) {
  delete static_cast<Group*>(g);
}

// In place; op: 0 = sum, 1 = max.
int rf_pg_allreduce(void* g, void* t, int op, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> ts{tensor(t)};
    c10d::AllreduceOptions o;
    o.reduceOp = op == 1 ? c10d::ReduceOp(c10d::ReduceOp::MAX)
                         : c10d::ReduceOp(c10d::ReduceOp::SUM);
    static_cast<Group*>(g)->backend->allreduce(ts, o)->wait();
  });
}

// out = concat over ranks (dim 0) of each rank's `in`; out has world × in's rows.
int rf_pg_allgather(void* g, void* out, void* in, char** err) {
  return guarded(err, [&] {
    static_cast<Group*>(g)
        ->backend->_allgather_base(tensor(out), tensor(in))
        ->wait();
  });
}

// In place, from rank `root`.
int rf_pg_broadcast(void* g, void* t, int root, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> ts{tensor(t)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    static_cast<Group*>(g)->backend->broadcast(ts, o)->wait();
  });
}

int rf_pg_barrier(void* g, char** err) {
  return guarded(err, [&] {
    static_cast<Group*>(g)->backend->barrier()->wait();
  });
}

} // extern "C"
