#include <cstdio>
#include "vdisk/vdisk.hpp"
int main() { std::puts("vdisk"); return 0; }
