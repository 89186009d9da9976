/*
 * A chain of 60 nested calls, main -> run -> level_01 -> ... -> level_60 -> spin, built without frame
 * pointers: only DWARF unwinding recovers it whole. Each level does work after its call, so no call
 * becomes a tail jump.
 *
 * usage: deep [SECONDS]   (default 5 s)
 */
#include "common.h"

static volatile unsigned long sink;

__attribute__((noinline)) void spin(void)
{
	unsigned long x = sink;
	for (int i = 0; i < 200000; i++)
		x = x * 6364136223846793005UL + 1;
	sink = x;
}

#define LEVEL(n, next) \
	__attribute__((noinline)) void level_##n(void) \
	{ \
		next(); \
		sink += 1##n; \
	}

LEVEL(60, spin)
LEVEL(59, level_60)
LEVEL(58, level_59)
LEVEL(57, level_58)
LEVEL(56, level_57)
LEVEL(55, level_56)
LEVEL(54, level_55)
LEVEL(53, level_54)
LEVEL(52, level_53)
LEVEL(51, level_52)
LEVEL(50, level_51)
LEVEL(49, level_50)
LEVEL(48, level_49)
LEVEL(47, level_48)
LEVEL(46, level_47)
LEVEL(45, level_46)
LEVEL(44, level_45)
LEVEL(43, level_44)
LEVEL(42, level_43)
LEVEL(41, level_42)
LEVEL(40, level_41)
LEVEL(39, level_40)
LEVEL(38, level_39)
LEVEL(37, level_38)
LEVEL(36, level_37)
LEVEL(35, level_36)
LEVEL(34, level_35)
LEVEL(33, level_34)
LEVEL(32, level_33)
LEVEL(31, level_32)
LEVEL(30, level_31)
LEVEL(29, level_30)
LEVEL(28, level_29)
LEVEL(27, level_28)
LEVEL(26, level_27)
LEVEL(25, level_26)
LEVEL(24, level_25)
LEVEL(23, level_24)
LEVEL(22, level_23)
LEVEL(21, level_22)
LEVEL(20, level_21)
LEVEL(19, level_20)
LEVEL(18, level_19)
LEVEL(17, level_18)
LEVEL(16, level_17)
LEVEL(15, level_16)
LEVEL(14, level_15)
LEVEL(13, level_14)
LEVEL(12, level_13)
LEVEL(11, level_12)
LEVEL(10, level_11)
LEVEL(09, level_10)
LEVEL(08, level_09)
LEVEL(07, level_08)
LEVEL(06, level_07)
LEVEL(05, level_06)
LEVEL(04, level_05)
LEVEL(03, level_04)
LEVEL(02, level_03)
LEVEL(01, level_02)

__attribute__((noinline)) void run(double seconds)
{
	double end = now_seconds() + seconds;
	while (now_seconds() < end)
		level_01();
}

int main(int argc, char **argv)
{
	run(seconds_arg(argc, argv, 5));
	return 0;
}
