/* hello-world: the smallest useful sample, a dynamically linked glibc program. */
#include <stdio.h>

int main(void)
{
    puts("Hello from scratchpack!");
    return 0;
}
