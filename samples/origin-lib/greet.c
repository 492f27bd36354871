/* greet: finds its private libgreet.so.1 through DT_RUNPATH $ORIGIN/lib. */
#include <stdio.h>

#include "greet.h"

int main(void)
{
    puts(greet_message());
    return 0;
}
