#include "fpt.h"
int main(void){return 0;}
