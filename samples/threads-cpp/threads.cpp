// threads-cpp: a C++17 program that needs libstdc++.so.6 at load time and
// libgcc_s.so.1 at run time.  glibc dlopen()s libgcc_s.so.1 to unwind a thread
// that is cancelled with pthread_cancel(); without it the process aborts with
// "libgcc_s.so.1 must be installed for pthread_cancel to work".  The C++
// exception below also unwinds through libgcc_s's unwinder.
#include <pthread.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kWorkers = 4;
constexpr int kCount = 100;  // sums 0..99 = 4950

// Each worker sums its own stride of 0..kCount-1.
void worker(int id, long *out)
{
    long sum = 0;
    for (int i = id; i < kCount; i += kWorkers)
        sum += i;
    *out = sum;
}

void *sleeper(void *)
{
    for (;;)
        pause();  // a cancellation point: blocks until cancelled
    return nullptr;
}

// Throws across a function boundary; caught in main().
[[noreturn]] void fail(const std::string &what)
{
    throw std::runtime_error(what);
}

}  // namespace

int main()
{
    std::vector<long> sums(kWorkers, 0);
    std::vector<std::thread> threads;
    for (int i = 0; i < kWorkers; ++i)
        threads.emplace_back(worker, i, &sums[i]);
    for (auto &t : threads)
        t.join();
    long total = std::accumulate(sums.begin(), sums.end(), 0L);
    std::cout << "threads: " << kWorkers << " workers summed " << total << '\n';
    if (total != 4950)
        return 1;

    pthread_t th;
    if (pthread_create(&th, nullptr, sleeper, nullptr) != 0)
        return 1;
    if (pthread_cancel(th) != 0)
        return 1;
    void *res = nullptr;
    if (pthread_join(th, &res) != 0)
        return 1;
    if (res != PTHREAD_CANCELED) {
        std::cout << "cancel: worker not cancelled\n";
        return 1;
    }
    std::cout << "cancel: worker cancelled\n";

    try {
        fail("boom from fail()");
    } catch (const std::exception &e) {
        std::cout << "exception: caught " << e.what() << '\n';
    }

    std::cout << "ok" << std::endl;
    return 0;
}
