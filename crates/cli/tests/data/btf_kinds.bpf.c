/* btf_kinds: maps whose keys and values cover every BTF kind bpftool's `formatted` output
 * prints (signed and unsigned ints of each width, bool, chars, strings, arrays, nested and
 * anonymous structs and unions, bitfields, enums of several sizes, pointers, __int128, float,
 * typedefs and modifiers, and .data/.bss/.rodata DATASECs). The program never runs; the test
 * writes bytes into the maps and compares bpftool's dump with bpfmaps'.
 *
 * Build: clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c btf_kinds.bpf.c -o btf_kinds.bpf.o
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

typedef unsigned int u32_alias;
typedef signed char s8_t;

enum color { RED = 0, GREEN = 1, BLUE = -2 };
enum __attribute__((packed)) small { S_A = 1, S_B = 200 };
enum wide { W_BIG = 0x1ffffffffLL };

struct inner {
	short s16;
	unsigned short u16;
	long long s64;
};

struct kinds {
	char name[8];
	unsigned char raw[4];
	_Bool flag;
	s8_t tiny;
	char letter;
	u32_alias alias;
	const volatile int cv;
	enum color color;
	enum small small;
	unsigned int low : 3;
	int mid : 7;
	unsigned int high : 22;
	struct inner inner;
	union {
		unsigned int as_u32;
		unsigned char as_bytes[4];
	};
	struct {
		unsigned char a, b;
	} pair;
	int grid[2][3];
	void *ptr;
	struct inner *iptr;
};

struct with_float {
	unsigned int before;
	float f;
	unsigned int after;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, int);
	__type(value, struct kinds);
} kinds_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, unsigned __int128);
} int128_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4);
	__type(key, struct inner);
	__type(value, enum wide);
} percpu_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct with_float);
} float_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, char[6]);
	__type(value, union { long long l; char c[8]; });
} string_key_map SEC(".maps");

int data_counter = 7;
char data_label[5] = "abcd";
long bss_total;
struct inner bss_inner;
const volatile unsigned char ro_small = 3;
const volatile enum color ro_color = GREEN;

SEC("tracepoint/syscalls/sys_enter_getppid")
int touch(void *ctx)
{
	__u32 zero = 0;
	struct with_float *f = bpf_map_lookup_elem(&float_map, &zero);

	if (f)
		f->before = ro_small + ro_color;
	data_counter++;
	bss_total += bss_inner.s64;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
