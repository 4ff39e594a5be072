/*
description: a model with a syntax error on line 6
*/
select
    1 as one,
    (2 + as two
from somewhere
