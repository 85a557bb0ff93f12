r"""The verifier on the answers models really write, kind by kind: Minerva / lm-eval closing
sentences and chat-template tokens after the answer, thousands separators in math mode, several
boxed answers against a gold list and golds written as labelled equations, expressions to
evaluate (sums and products of numbers and matrices), European decimal commas and doubly-escaped
LaTeX from JSON. Cases written for nanorlsp; no other project's test cases are copied here.

    python -m pytest tests/test_verifier_model_output.py -q
"""
import pytest

from nanorlsp.verifier import grade

CASES = [
 # Minerva closings
 ("Final Answer: The final answer is $1,250$. I hope it is correct.", "1250", True),
 ("Final Answer: The smallest $k$ is 17.", "17", True),
 ("Final Answer: The smallest $k$ is $17$.", "17", True),
 ("Final Answer: The value of $x$ is $\\frac{3}{4}$.", "\\frac34", True),
 ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.<|eot_id|>", "\\frac34", True),
 ("Final Answer: The final answer is 17. I hope it is correct.</s>", "17", True),
 ("Final Answer: There are 17 ways.", "17", True),
 ("Final Answer: $n = 17$", "17", True),
 ("Final answer: 17 apples. I hope it is correct.", "17", True),
 ("The final answer is $\\boxed{17}$. I hope it is correct.<|im_end|>", "17", True),
 ("The answer is 17.<|endoftext|>", "17", True),
 ("The answer is $17$.\n\n<|im_end|>\n<|im_start|>user\nWhat about 5?", "17", True),
 ("Final Answer: The final answer is $17$. I hope it is correct.\n\nProblem:\nFind 2+3.\n\nSolution: 5", "17", True),
 ("Final Answer: The final answer is $(2, 3)$. I hope it is correct.", "(2,3)", True),
 ("Final Answer: The largest possible value of $a + b$ is $12$.", "12", True),
 ("Final Answer: The number of solutions to $x^2 = 4$ is 2.", "2", True),
 # thousands in math mode
 ("So the total is $1,250$.", "1250", True),
 ("\\boxed{1,250}", "1250", True),
 ("\\boxed{\\$1,250}", "1250", True),
 ("$1,250 + 300 = 1,550$", "1550", True),
 ("\\boxed{1,250,000}", "1250000", True),
 ("The prices are $1,250$ and $3,500$.", "1250, 3500", True),
 ("\\boxed{1,250} and \\boxed{3,500}", "1250, 3500", True),
 ("\\boxed{2 \\times 1,000}", "2000", True),
 # several boxed answers
 ("\\boxed{(1, 4)} and \\boxed{(4, 1)}", "(4,1),(1,4)", True),
 ("The solutions are $x = \\boxed{2}$ and $x = \\boxed{5}$.", "2, 5", True),
 ("\\boxed{m = 3} and \\boxed{n = 8}", "(3, 8)", True),
 ("\\boxed{(2,5),(5,2)}", "x=2,y=5;x=5,y=2", True),
 ("\\boxed{(2,5)} and \\boxed{(5,2)}", "x=2,y=5;x=5,y=2", True),
 ("\\boxed{x=2,y=5} or \\boxed{x=5,y=2}", "(2,5),(5,2)", True),
 ("\\boxed{x=2,y=5;x=5,y=2}", "(5,2),(2,5)", True),
 ("\\boxed{(2,5)}", "x=2,y=5;x=5,y=2", False),
 ("\\boxed{7, 40}", "b_2 = 7, b_9 = 40", True),
 ("\\boxed{b_2 = 7, b_9 = 40}", "7, 40", True),
 ("\\boxed{3:5}", "AB:CD=3:5", True),
 ("\\boxed{AB:CD = 3:5}", "3:5", True),
 ("\\boxed{a = 2, b = 3}", "a=2,b=3", True),
 ("\\boxed{a = 2}, \\boxed{b = 3}", "a=2,b=3", True),
 ("\\boxed{x=1} \\text{ and } \\boxed{y=2}", "(1,2)", True),
 # expression to evaluate
 ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}+\\begin{pmatrix}3\\\\4\\end{pmatrix}}", "\\begin{pmatrix}4\\\\6\\end{pmatrix}", True),
 ("\\boxed{2\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "\\begin{pmatrix}2\\\\4\\end{pmatrix}", True),
 ("\\boxed{\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}\\begin{pmatrix}1\\\\1\\end{pmatrix}}", "\\begin{pmatrix}3\\\\7\\end{pmatrix}", True),
 ("\\boxed{\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}\\begin{pmatrix}1\\\\1\\end{pmatrix}}", "\\begin{pmatrix}3\\\\8\\end{pmatrix}", False),
 ("\\boxed{3 \\cdot 4 + 5}", "17", True), ("\\boxed{2^{10}}", "1024", True), ("\\boxed{\\frac{10!}{8!}}", "90", True),
 ("\\boxed{12 \\times 25}", "300", True), ("\\boxed{\\$12 \\times 25}", "300", True),
 # decimal commas
 ("\\boxed{2{,}5}", "2.5", True), ("\\boxed{0,75}", "0.75", True), ("La respuesta es 3,75.", "3.75", True),
 ("\\boxed{1.234,56}", "1234.56", True), ("\\boxed{2,5 \\text{ cm}}", "2.5", True),
 ("Die Antwort ist $3{,}14$.", "3.14", True),
 # doubly escaped
 ("\\boxed{\\frac{1}{2}}", "\\\\frac{1}{2}", True), ("\\boxed{\\sqrt{2}}", "\\\\sqrt{2}", True),
 ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "\\\\begin{pmatrix}1\\\\\\\\2\\\\end{pmatrix}", True),
 ("\\boxed{\\frac{\\pi}{3}}", "\\\\frac{\\\\pi}{3}", True),
 ("\\boxed{\\frac{1}{3}}", "\\\\frac{1}{2}", False),
 # more of each kind
 ("Final Answer: The final answer is 1,250. I hope it is correct.", "1250", True),
 ("Final Answer: The final answer is $x=5$. I hope it is correct.", "5", True),
 ("Final Answer: The final answer is \\$1,250. I hope it is correct.", "1250", True),
 ("Final Answer: The final answer is $\\$1,250.50$. I hope it is correct.", "1250.5", True),
 ("The answer is 5</answer>", "5", True),
 ("Answer: 42<|eot_id|><|start_header_id|>assistant<|end_header_id|>", "42", True),
 ("Final Answer: The area of the triangle is $24\\text{ cm}^2$.", "24", True),
 ("Final Answer: The probability that both are red is $\\frac{1}{6}$.", "\\frac16", True),
 ("Final Answer: The answer is (B).", "B", True),
 ("Final Answer: Therefore, the sum is 45.", "45", True),
 ("Final Answer: So $x$ equals $-3$.", "-3", True),
 ("Final Answer: $\\boxed{7}$", "7", True),
 ("Final answer: The two numbers are 3 and 8.", "3, 8", True),
 ("Final Answer: It is 5 because x is 3.", "5", True),
 ("Final Answer: The final answer is $5$. I hope it is correct.\n\nProblem:\nWhat is 2+2?\n\nSolution:", "5", True),
 ("The total cost is $\\$12,345,678$.", "12345678", True),
 ("So $x = 1{,}250$.", "1250", True),
 ("\\boxed{1,000 \\text{ dollars}}", "1000", True),
 ("\\boxed{3} and \\boxed{8}", "m = 3, n = 8", True),
 ("\\boxed{x = 2} \\text{ or } \\boxed{x = -3}", "2, -3", True),
 ("\\boxed{a=1}, \\boxed{b=2}, \\boxed{c=3}", "(1,2,3)", True),
 ("\\boxed{(1,2,3)}", "a=1, b=2, c=3", True),
 ("\\boxed{b_2=7} and \\boxed{b_9=40}", "b_2 = 7, b_9 = 40", True),
 ("\\boxed{3/5}", "AB:CD=3:5", True),
 ("\\boxed{x=2, y=5 \\text{ or } x=5, y=2}", "(2,5),(5,2)", True),
 ("The solutions are $(x, y) = (2, 5)$ and $(x, y) = (5, 2)$.", "x=2,y=5;x=5,y=2", True),
 ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix} + 3\\begin{pmatrix} 1 \\\\ 0 \\end{pmatrix}}", "\\begin{pmatrix} 4 \\\\ 2 \\end{pmatrix}", True),
 ("\\boxed{-\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} -1 \\\\ -2 \\end{pmatrix}", True),
 ("\\boxed{\\frac{1}{2}\\begin{pmatrix} 2 \\\\ 4 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", True),
 ("\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix} \\cdot \\begin{pmatrix} 0 & 1 \\\\ 1 & 0 \\end{pmatrix}}", "\\begin{pmatrix} 2 & 1 \\\\ 4 & 3 \\end{pmatrix}", True),
 ("\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix} \\cdot \\begin{pmatrix} 0 & 1 \\\\ 1 & 0 \\end{pmatrix}}", "\\begin{pmatrix} 3 & 4 \\\\ 1 & 2 \\end{pmatrix}", False),
 ("\\boxed{2 \\cdot 3 + 4}", "10", True),
 ("\\boxed{\\$3 \\times 12 = \\$36}", "36", True),
 ("\\boxed{\\frac{3 \\cdot 4}{2}}", "6", True),
 ("\\boxed{5 \\times 10^{3}}", "5000", True),
 ("\\boxed{3,5 \\text{ cm}}", "3.5", True),
 ("\\boxed{-0,5}", "-0.5", True),
 ("Die Antwort ist 12,50 €.", "12.5", True),
 ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\\\frac{\\\\sqrt{3}}{2}", True),
 ("\\boxed{(A)}", "\\\\text{(A)}", True),
 ("\\boxed{\\dfrac{1}{2}}", "\\\\dfrac{1}{2}", True),
 ("\\boxed{[1, 2)}", "\\\\left[1, 2\\\\right)", True),

 # text of another turn after an end-of-turn token
 ("So she has 18 apples left.<|im_end|>\n<|im_start|>user\nThanks! And 2 more?", "18", True),
 ("The total is $42$.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nNow 7.", "42", True),
 ("<|im_end|>So she has 18 apples left.", "18", True),
]


@pytest.mark.parametrize("response,gold,expected", CASES, ids=range(len(CASES)))
def test_model_output_kinds(response, gold, expected):
    assert grade(response, gold) is expected
