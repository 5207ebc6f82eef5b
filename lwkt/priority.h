// priority.h
//
// The LWKT priority ladder (DragonFly's TDPRI_*): larger is more important. A thread's
// td_pri orders the run queue; td_upri breaks ties among equal td_pri (larger first); exact
// ties run in arrival order and rotate round-robin when their slice is used.
#pragma once

namespace lwkt {

inline constexpr int TDPRI_IDLE_THREAD = 0;    // the worker's idle thread only
inline constexpr int TDPRI_IDLE_WORK = 1;      // background work that runs only when idle
inline constexpr int TDPRI_USER_SCHEDULER = 2;
inline constexpr int TDPRI_USER_IDLE = 4;      // user work, idle class
inline constexpr int TDPRI_USER_NORM = 6;      // user work, normal class
inline constexpr int TDPRI_USER_REAL = 8;      // user work, realtime class
inline constexpr int TDPRI_KERN_LPSCHED = 9;   // comparison point: below = user-level
inline constexpr int TDPRI_KERN_USER = 10;
inline constexpr int TDPRI_KERN_DAEMON = 12;   // default for new threads
inline constexpr int TDPRI_SOFT_NORM = 14;
inline constexpr int TDPRI_SOFT_TIMER = 16;
inline constexpr int TDPRI_INT_SUPPORT = 20;   // completion handlers and the like
inline constexpr int TDPRI_INT_LOW = 27;
inline constexpr int TDPRI_INT_MED = 28;
inline constexpr int TDPRI_INT_HIGH = 29;
inline constexpr int TDPRI_MAX = 31;

inline constexpr int kNumPriorities = TDPRI_MAX + 1;

}  // namespace lwkt
