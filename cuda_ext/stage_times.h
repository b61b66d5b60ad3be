// Wall time of each stage of the last CPU rasterization on this thread, for `avatar3d bench raster`'s per-stage
// table. CUDA launches are asynchronous and are not timed here (their total is timed with a synchronisation).
#pragma once

#include <chrono>

namespace a3d {

struct StageTimes {  // milliseconds
    double project = 0, intersect = 0, sort = 0, blend = 0, blend_backward = 0, project_backward = 0;
};

inline StageTimes& stage_times() {
    thread_local StageTimes times;
    return times;
}

// Writes (or with `add`, adds) the time from its construction to its destruction into `slot`.
class StageTimer {
  public:
    explicit StageTimer(double& slot, bool add = false)
        : slot_(slot), add_(add), start_(std::chrono::steady_clock::now()) {}
    ~StageTimer() {
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
        slot_ = add_ ? slot_ + ms : ms;
    }
    StageTimer(const StageTimer&) = delete;
    StageTimer& operator=(const StageTimer&) = delete;

  private:
    double& slot_;
    bool add_;
    std::chrono::steady_clock::time_point start_;
};

}  // namespace a3d
