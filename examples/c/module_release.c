/* A program of about 1 MB that burns 0.15 s of CPU in one function; ID (set with -D, 1 to 255)
 * fills its data, so that every build is a distinct file, as a build server's are. Not built by
 * build.rs: tests/it/module_release.rs and benches/module-release.sh build many copies of it.
 * The burn is measured in CPU time, not iterations: 200 million additions took 0.15 s on one
 * machine and 0.05 s on the next, too short for the recording to reach a checkpoint. */
#include <time.h>

static volatile unsigned long sink;
__attribute__((used)) static const unsigned char padding[1 << 20] = { ID, ID, ID };

__attribute__((noinline)) void module_release_burn(void) {
    struct timespec used;
    do {
        for (unsigned long i = 0; i < 1000000UL; i++) sink += i;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &used);
    } while (used.tv_sec == 0 && used.tv_nsec < 150000000L);
}

int main(void) { module_release_burn(); return padding[0] == 255; }
