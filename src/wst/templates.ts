// WST's prompts. Our definitions (the paper's body and code are not public; README "WST"):
// the teacher continues `teacher` (with the query) and writes one line, the instruction; the
// student continues `student` (instruction and query), or `studentNone` when there is none.

export interface WstTemplates {
  /** The teacher's prompt; must contain {query}. The teacher's completion up to a line end is the instruction. */
  teacher: string;
  /** The student's prompt with an instruction; must contain {instruction} and {query}. */
  student: string;
  /** The student's prompt without an instruction; must contain {query}. */
  studentNone: string;
}

/** The built-in demo's templates (character-level models: short and fixed). */
export const BUILTIN_TEMPLATES: WstTemplates = {
  teacher: 'Q: {query}\nI: ',
  student: 'I: {instruction}\nQ: {query}\nA: ',
  studentNone: 'Q: {query}\nA: ',
};

/** Templates for general-purpose models on GSM8K / MATH-500 (text completion). */
export const TEXT_TEMPLATES: WstTemplates = {
  teacher: 'Write one short instruction that will help a student solve the problem below.\nProblem: {query}\nInstruction:',
  student: 'Instruction: {instruction}\nQuestion: {query}\nAnswer:',
  studentNone: 'Question: {query}\nAnswer:',
};

export function checkTemplates(t: WstTemplates): WstTemplates {
  if (!t.teacher.includes('{query}')) throw new RangeError('templates.teacher must contain {query}');
  if (!t.student.includes('{query}') || !t.student.includes('{instruction}')) throw new RangeError('templates.student must contain {instruction} and {query}');
  if (!t.studentNone.includes('{query}')) throw new RangeError('templates.studentNone must contain {query}');
  return t;
}

function fill(template: string, vars: Record<string, string>): string {
  return template.replace(/\{(query|instruction)\}/g, (_, k: string) => vars[k]);
}

export function teacherPrompt(t: WstTemplates, query: string): string {
  return fill(t.teacher, { query });
}

/** The student's prompt; a null or empty instruction uses `studentNone`. */
export function studentPrompt(t: WstTemplates, instruction: string | null, query: string): string {
  return instruction ? fill(t.student, { instruction, query }) : fill(t.studentNone, { query });
}

/** The instruction a teacher's completion gives: its first line, trimmed, at most `maxChars`. */
export function parseInstruction(completion: string, maxChars = 200): string {
  const line = completion.split('\n', 1)[0].trim();
  return line.length > maxChars ? line.slice(0, maxChars) : line;
}
