/*
 * C++ as a Debian package builds it: `-O2 -g` and nothing else, so no frame pointers, and most of
 * the time spent in libstdc++ templates inlined into our functions and in libc (memcmp, malloc).
 * main -> run -> sort_words (copies a std::vector<std::string> and std::sorts it) and main -> run ->
 * count_words (std::map<std::string, unsigned>): nearly all the time is under one of the two.
 *
 * usage: cpp-o2 [SECONDS]   (default 5 s)
 */
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "../c/common.h"

static volatile unsigned long sink;

/* A word list that compares slowly: long shared prefixes. */
static std::vector<std::string> make_words(unsigned seed)
{
	std::vector<std::string> words;
	unsigned long x = seed;
	for (int i = 0; i < 4000; i++) {
		x = x * 6364136223846793005UL + 1442695040888963407UL;
		words.push_back("emberprof-word-" + std::to_string(x % 997) + "-" +
				std::to_string(x % 13));
	}
	return words;
}

__attribute__((noinline)) unsigned long sort_words(const std::vector<std::string> &words)
{
	std::vector<std::string> sorted = words;
	std::sort(sorted.begin(), sorted.end());
	return sorted.front().size() + sorted.back().size();
}

__attribute__((noinline)) unsigned long count_words(const std::vector<std::string> &words)
{
	std::map<std::string, unsigned> counts;
	for (const std::string &word : words)
		counts[word]++;
	return counts.size();
}

/* Stores after each call so that neither becomes a tail jump that drops run. */
__attribute__((noinline)) void run(double seconds, const std::vector<std::string> &words)
{
	double end = now_seconds() + seconds;
	while (now_seconds() < end) {
		sink += sort_words(words);
		sink += count_words(words);
	}
}

int main(int argc, char **argv)
{
	std::vector<std::string> words = make_words(1);
	run(seconds_arg(argc, argv, 5), words);
	return 0;
}
